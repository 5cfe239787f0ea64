// The open-file limit: every UDP session and every TCP connection holds fds,
// so relay raises its limit at start to what its configured bounds can use.
import * as os from 'node:os';
import { libc } from './libc';
import { RLIMIT_NOFILE } from './constants';
import { SysError } from '../errors';

export interface FileLimit {
  soft: number;
  hard: number;
}

/** struct rlimit: two rlim_t (unsigned 64-bit on Linux) */
const RLIMIT_SIZE = 8 + 8;

export function getFileLimit(): FileLimit {
  const buf = Buffer.alloc(RLIMIT_SIZE);
  if (libc().getrlimit(RLIMIT_NOFILE, buf) !== 0) {
    throw new SysError({ errno: libc().errno(), syscall: 'getrlimit(RLIMIT_NOFILE)' });
  }
  return { soft: clamp(readU64(buf, 0)), hard: clamp(readU64(buf, 8)) };
}

/**
 * Raise the limit to `wanted`: past the hard limit where the process may
 * (CAP_SYS_RESOURCE), else as far as the hard limit. Returns the limit now in force.
 */
export function raiseFileLimit(wanted: number): FileLimit {
  const limit = getFileLimit();
  if (limit.soft >= wanted) return limit;
  if (wanted > limit.hard && setFileLimit(wanted, wanted)) return { soft: wanted, hard: wanted };
  if (limit.soft < limit.hard && setFileLimit(limit.hard, limit.hard)) return { soft: limit.hard, hard: limit.hard };
  return limit;
}

function setFileLimit(soft: number, hard: number): boolean {
  const buf = Buffer.alloc(RLIMIT_SIZE);
  writeU64(buf, BigInt(soft), 0);
  writeU64(buf, BigInt(hard), 8);
  return libc().setrlimit(RLIMIT_NOFILE, buf) === 0;
}

/** RLIM_INFINITY is all ones; nothing here needs more than a safe integer. */
function clamp(value: bigint): number {
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

// rlim_t is in host byte order.
const LITTLE_ENDIAN = os.endianness() === 'LE';

function readU64(buf: Buffer, offset: number): bigint {
  return LITTLE_ENDIAN ? buf.readBigUInt64LE(offset) : buf.readBigUInt64BE(offset);
}

function writeU64(buf: Buffer, value: bigint, offset: number): void {
  if (LITTLE_ENDIAN) buf.writeBigUInt64LE(value, offset);
  else buf.writeBigUInt64BE(value, offset);
}
