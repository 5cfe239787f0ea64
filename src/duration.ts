// Durations on the command line: "500ms", "5s", "10m", "1h", or a bare number of seconds.
import { ConfigError } from './errors';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) {
    throw new ConfigError(`${flag} must be a duration like 500ms, 5s, 10m or 1h: got '${text}'`);
  }
  return Math.round(Number(match[1]) * UNIT_MS[match[2] ?? 's']);
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
