// Typed errors. Operators read these as one line, so every error carries a
// message that names what failed and, where we know it, a hint saying what to do.
import * as util from 'node:util';

export type RelayErrorCode =
  | 'ERR_CONFIG'
  | 'ERR_PRIVILEGE'
  | 'ERR_SYSCALL'
  | 'ERR_ROUTES'
  | 'ERR_LAB';

export class RelayError extends Error {
  readonly code: RelayErrorCode | string;
  readonly hint?: string;
  constructor(code: RelayErrorCode | string, message: string, hint?: string) {
    super(message);
    this.name = 'RelayError';
    this.code = code;
    this.hint = hint;
  }
}

/** A bad flag or config value: the CLI prints usage and exits 2. */
export class ConfigError extends RelayError {
  constructor(message: string, hint?: string) {
    super('ERR_CONFIG', message, hint);
    this.name = 'ConfigError';
  }
}

export interface SysErrorDetails {
  errno: number;
  syscall: string;
  address?: string;
  port?: number;
  hint?: string;
}

/**
 * A failed system call, shaped like Node's own system errors (errno is
 * negative, code is the symbolic name) so `util.getSystemErrorName`, logs and
 * operators all speak the same language: "bind EADDRINUSE 192.0.2.1:80".
 */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  readonly address?: string;
  readonly port?: number;
  readonly hint?: string;

  constructor(details: SysErrorDetails) {
    const errno = -Math.abs(details.errno);
    const code = systemErrorName(errno);
    super(`${details.syscall} ${code}${formatTarget(details.address, details.port)}`);
    this.name = 'SysError';
    this.errno = errno;
    this.code = code;
    this.syscall = details.syscall;
    this.address = details.address;
    this.port = details.port;
    this.hint = details.hint;
  }
}

function systemErrorName(negativeErrno: number): string {
  try {
    return util.getSystemErrorName(negativeErrno);
  } catch {
    return `Unknown system error ${negativeErrno}`;
  }
}

function formatTarget(address?: string, port?: number): string {
  if (address === undefined) return '';
  const host = address.includes(':') ? `[${address}]` : address;
  return port === undefined ? ` ${address}` : ` ${host}:${port}`;
}

/** How much of a value an error message echoes. */
export const ECHO_LIMIT = 200;

/**
 * A value as an error message may echo it: control characters escaped (a
 * newline cannot fake a second `relay:` line, an escape sequence cannot
 * reach the terminal) and cut at `limit` characters, saying how many more.
 */
export function echo(value: string, limit = ECHO_LIMIT): string {
  const chars = [...value];
  const shown = chars.slice(0, limit).join('').replace(/\p{Cc}/gu, escapeControl);
  return chars.length > limit ? `${shown}... (${chars.length - limit} more)` : shown;
}

function escapeControl(c: string): string {
  const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  return named[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
}

/** One line for an operator: message, then the hint if there is one. */
export function describeError(err: unknown): string {
  if (err instanceof SysError || err instanceof RelayError) {
    return err.hint ? `${err.message} (${err.hint})` : err.message;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
