// What relay's hand-made struct layouts assume, checked before anything uses
// them. udp-batch.ts writes mmsghdr/iovec pointers and lengths as 8-byte
// little-endian fields at LP64 offsets, and tcp-handle.ts a struct linger in
// host order: written for 64-bit little-endian Linux (x86_64, aarch64 and the
// like). On anything else they would hand the kernel garbage, so relay refuses
// to start there rather than corrupt datagrams. Pure: no koffi, no sockets.
import * as os from 'node:os';
import { RelayError } from '../errors';
import { permissionModelError } from './node-binding';

export interface PlatformFacts {
  platform: string;
  arch: string;
  endianness: 'BE' | 'LE';
  /** Whether Node's permission model is on (process.permission exists only then). */
  permissionModel: boolean;
}

/** Node's process.arch values with 64-bit pointers; the byte order is checked on its own. */
const ARCHES_64_BIT = new Set(['x64', 'arm64', 'ppc64', 'riscv64', 'loong64', 's390x', 'mips64el']);

export function currentPlatform(): PlatformFacts {
  return {
    platform: process.platform,
    arch: process.arch,
    endianness: os.endianness(),
    permissionModel: (process as { permission?: unknown }).permission !== undefined,
  };
}

/** Why relay cannot run here, as one line (with its hint), or undefined when it can. */
export function platformProblem(facts: PlatformFacts): RelayError | undefined {
  const here = `${facts.platform} ${facts.arch}, ${facts.endianness === 'LE' ? 'little' : 'big'}-endian`;
  if (facts.platform !== 'linux') {
    return new RelayError('ERR_PLATFORM', `relay runs on Linux only (this is ${here})`,
      'IP_TRANSPARENT and the socket layouts relay uses are Linux\'s');
  }
  if (!ARCHES_64_BIT.has(facts.arch) || facts.endianness !== 'LE') {
    return new RelayError('ERR_PLATFORM',
      `relay's socket structs (mmsghdr, iovec, linger) are laid out for 64-bit little-endian Linux, and this is ${here}`,
      'run relay on x64 or arm64');
  }
  if (facts.permissionModel) return permissionModelError();
  return undefined;
}

/** Refuse the start, with one line, on a platform relay's layouts were not written for or under --permission. */
export function assertSupportedPlatform(facts: PlatformFacts = currentPlatform()): void {
  const problem = platformProblem(facts);
  if (problem) throw problem;
}
