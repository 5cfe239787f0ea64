// Durations on the command line: "250ms", "5s", "10m", "2h", always with their
// unit. A bare number is ambiguous (HAProxy reads it as ms, nginx as seconds),
// so only `0` goes without one.
import { ConfigError, echo } from './errors';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** The longest delay a Node timer holds: a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Milliseconds from a duration flag's text, in [min, MAX_TIMER_MS]. min is 0
 * only where 0 turns the feature off; a non-zero value that rounds to 0 ms is
 * refused either way rather than silently turning it off.
 */
export function parseDuration(text: string, flag: string, min: 0 | 1 = 1): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!match) {
    throw new ConfigError(`${flag} must be a duration like 250ms, 5s, 10m or 2h: got '${echo(text)}'`);
  }
  // From here text is digits and a unit, but it may be long.
  const shown = echo(text);
  const [, number, unit] = match;
  const value = Number(number);
  if (unit === undefined && value !== 0) throw new ConfigError(`${flag} ${shown}: ${bareNumberHint(number, min)}`);
  const ms = Math.round(value * UNIT_MS[unit ?? 'ms']);
  if (ms === 0 && value !== 0) throw new ConfigError(`${flag} ${shown} is less than 1ms, the shortest duration`);
  if (ms < min || ms > MAX_TIMER_MS) throw new ConfigError(`${flag} ${shown} is out of range: ${allowedRange(min)}`);
  return ms;
}

/** The two readings of a bare number (HAProxy's in ms, nginx's in s), each said only if it is in range. */
function bareNumberHint(number: string, min: 0 | 1): string {
  const readings = [{ unit: 'ms', reader: 'HAProxy' }, { unit: 's', reader: 'nginx' }].map(({ unit, reader }) => {
    const ms = Math.round(Number(number) * UNIT_MS[unit]);
    return { text: `${number}${unit}`, reader, fits: ms >= Math.max(min, 1) && ms <= MAX_TIMER_MS };
  });
  const fitting = readings.filter((r) => r.fits);
  if (fitting.length === 0) return `a duration needs its unit, and is ${allowedRange(min)}`;
  const unfit = readings.filter((r) => !r.fits)
    .map((r) => `; ${r.text}, as ${r.reader} reads it, is out of range: ${allowedRange(min)}`).join('');
  return `a duration needs its unit: write ${fitting.map((r) => `${r.text} (as ${r.reader} reads it)`).join(' or ')}${unfit}`;
}

function allowedRange(min: 0 | 1): string {
  return `${min === 0 ? '0 (off)' : '1ms'} to ${MAX_TIMER_MS}ms, about ${Math.floor(MAX_TIMER_MS / UNIT_MS.h)}h`;
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
