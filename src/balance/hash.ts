// Hashes for the hash-based algorithms (source, maglev). Pure.
//
// The hash is MurmurHash3 x86_32. Several relay hosts must map a client to
// the same backend without talking to each other, so it has to be exactly
// reproducible (integer arithmetic only, fixed seeds: never Math.random, a
// per-process seed or a locale), and it runs once per new client, so it has
// to be fast. Murmur3 is both: Math.imul keeps it in 32-bit integers, where
// FNV-1a 64 would need BigInt or hand-split halves; it avalanches fully, so
// `hash % M` uses every input bit (FNV's low output bits depend only on the
// low bits of the input); and a seed gives independent functions, which
// maglev needs two of. No cryptographic strength is needed: clients do not
// choose their address freely enough to aim at one backend, and they gain
// nothing by it.
import ipaddr from 'ipaddr.js';

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** MurmurHash3 x86_32 of bytes[0, length): an unsigned 32-bit integer. */
export function murmur3(bytes: Uint8Array, length: number, seed: number): number {
  let h = seed | 0;
  const blocks = length & ~3;
  for (let i = 0; i < blocks; i += 4) {
    const k = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    h ^= scramble(k);
    h = rotl(h, 13);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail > 0) {
    let k = bytes[blocks];
    if (tail >= 2) k |= bytes[blocks + 1] << 8;
    if (tail >= 3) k |= bytes[blocks + 2] << 16;
    h ^= scramble(k);
  }
  return finalize(h ^ length);
}

function scramble(k: number): number {
  return Math.imul(rotl(Math.imul(k, C1), 15), C2);
}

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** Murmur3's fmix32: every input bit affects every output bit. */
function finalize(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Murmur3 of a string's UTF-8 bytes. */
export function hashString(text: string, seed: number): number {
  const bytes = Buffer.from(text, 'utf8');
  return murmur3(bytes, bytes.length, seed);
}

/** Seed for client keys: unrelated to maglev's two, so the functions are independent. */
const CLIENT_SEED = 0x2545f491;

// Reused by every clientHash call: pick() is synchronous, so nothing else
// can write it between the fill and the hash. 16 address bytes + 2 port bytes.
const scratch = new Uint8Array(16 + 2);

/**
 * Hash of a client's address bytes (4 for IPv4, 16 for IPv6), and port if
 * given. An IPv4-mapped IPv6 address hashes as its IPv4 address, so a client
 * keeps its backend whether it reached a dual-stack or an IPv4 listener.
 * Throws if address is not an IP literal.
 */
export function clientHash(address: string, port?: number): number {
  let length = writeAddressBytes(address, scratch);
  if (port !== undefined) {
    scratch[length++] = port >>> 8;
    scratch[length++] = port & 0xff;
  }
  return murmur3(scratch, length, CLIENT_SEED);
}

/** Writes address bytes into out; returns how many (4 or 16). Throws unless an IP literal. */
export function writeAddressBytes(address: string, out: Uint8Array): number {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (!v4.includes(':')) {
    if (writeDottedQuad(v4, out)) return 4;
    throw new Error(`not an IP address: '${address}'`);
  }
  if (!writeIPv6(address, out)) {
    // Rare forms (zone ids, embedded dotted quads) and errors: ipaddr.js
    // parses the former and throws on the latter.
    out.set(ipaddr.IPv6.parse(address).toByteArray());
  }
  if (!isIPv4Mapped(out)) return 16;
  out.copyWithin(0, 12, 16); // '::ffff:c000:201' is 192.0.2.1
  return 4;
}

/** ::ffff:0:0/96 */
function isIPv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

// The hand-written parsers below exist for speed: ipaddr.parse costs several
// times the hash. Each returns false for anything it does not handle, and
// the caller then falls back to ipaddr.js or refuses the address.

// Groups of an IPv6 address, before placing them around the '::' gap.
const words = new Uint16Array(8);

/** Hex groups with at most one '::' (no zone, no dotted quad); into out[0..15]. */
function writeIPv6(text: string, out: Uint8Array): boolean {
  let count = 0;
  let gap = -1; // where '::' stands, counted in groups
  let i = 0;
  if (text.startsWith('::')) {
    gap = 0;
    i = 2;
  }
  while (i < text.length) {
    const end = readGroup(text, i, count);
    if (end < 0) return false;
    count++;
    if (end === text.length) break;
    if (text.charCodeAt(end) !== 0x3a /* : */ || end + 1 === text.length) return false;
    i = end + 1;
    if (text.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false;
      gap = count;
      i++;
    }
  }
  if (gap < 0 ? count !== 8 : count > 7) return false;
  placeWords(count, gap < 0 ? count : gap, out);
  return true;
}

/** Reads the 1-4 hex digits at start into words[index]; returns their end, or -1. */
function readGroup(text: string, start: number, index: number): number {
  if (index === 8) return -1;
  let value = 0;
  let end = start;
  for (; end < text.length; end++) {
    const digit = hexValue(text.charCodeAt(end));
    if (digit < 0) break;
    value = (value << 4) | digit;
  }
  if (end === start || end - start > 4) return -1;
  words[index] = value;
  return end;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20; // 'A'-'F' -> 'a'-'f'
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
}

/** words[0, gap) at the front, words[gap, count) at the back, zeros between. */
function placeWords(count: number, gap: number, out: Uint8Array): void {
  out.fill(0, 0, 16);
  for (let k = 0; k < count; k++) {
    const at = k < gap ? 2 * k : 16 - 2 * (count - k);
    out[at] = words[k] >>> 8;
    out[at + 1] = words[k] & 0xff;
  }
}

/** Strict decimal a.b.c.d into out[0..3]. */
function writeDottedQuad(text: string, out: Uint8Array): boolean {
  let octet = 0;
  let digits = 0;
  let index = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (digits === 0 || index === 3) return false;
      out[index++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39 && digits < 3) {
      octet = octet * 10 + (c - 0x30);
      digits++;
      if (octet > 255) return false;
    } else {
      return false;
    }
  }
  if (digits === 0 || index !== 3) return false;
  out[3] = octet;
  return true;
}
