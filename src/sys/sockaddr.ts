// sockaddr_in / sockaddr_in6 encoding, written by hand into a Buffer so it can
// be unit-tested without loading libc. Layouts from <linux/in.h>, <linux/in6.h>.
import * as net from 'node:net';
import * as os from 'node:os';
import ipaddr from 'ipaddr.js';
import { AF_INET, AF_INET6 } from './constants';
import { ConfigError } from '../errors';

/** sa_family(2) + sin_port(2) + sin_addr(4) + sin_zero(8) */
export const SOCKADDR_IN_SIZE = 2 + 2 + 4 + 8;
/** sa_family(2) + sin6_port(2) + sin6_flowinfo(4) + sin6_addr(16) + sin6_scope_id(4) */
export const SOCKADDR_IN6_SIZE = 2 + 2 + 4 + 16 + 4;

export type Family = 4 | 6;

/** Encode an IP literal and port; the family follows the literal. */
export function encodeSockaddr(address: string, port: number): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`port out of range: ${port}`);
  }
  const ipv4 = ipv4Number(address);
  if (ipv4 !== undefined) return encodeIn(ipv4, port);
  if (net.isIP(address) !== 6) throw new ConfigError(`not an IP address: ${address}`);
  return encodeIn6(address, port);
}

const DOT = 0x2e;
const DIGIT_0 = 0x30;

/**
 * The 32 bits of an IPv4 dotted quad as a number, or undefined if address is
 * not one (exactly the literals net.isIPv4 accepts: four decimal octets up to
 * 255, no leading zeros). Read by hand: it runs for every session (its
 * sockaddrs, the raw engine's keys), where net.isIP's regular expression and
 * a split were a tenth of a one-reply session's JavaScript.
 */
export function ipv4Number(address: string): number | undefined {
  let value = 0;
  let octets = 0;
  let i = 0;
  const length = address.length;
  while (i < length) {
    const start = i;
    let octet = 0;
    while (i < length && i - start < 4) {
      const digit = address.charCodeAt(i) - DIGIT_0;
      if (digit < 0 || digit > 9) break;
      octet = octet * 10 + digit;
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && address.charCodeAt(start) === DIGIT_0)) return undefined;
    value = value * 256 + octet;
    octets++;
    if (i === length) break;
    if (address.charCodeAt(i) !== DOT || octets === 4) return undefined;
    i++;
    if (i === length) return undefined; // a trailing dot
  }
  return octets === 4 ? value : undefined;
}

/**
 * Zeroed bytes from Node's shared pool: Buffer.alloc would make a whole
 * ArrayBuffer for 16 bytes, a cost paid for every upstream socket.
 */
function zeroed(size: number): Buffer {
  return Buffer.allocUnsafe(size).fill(0);
}

function encodeIn(ipv4: number, port: number): Buffer {
  const buf = zeroed(SOCKADDR_IN_SIZE);
  writeHostU16(buf, AF_INET, 0);
  buf.writeUInt16BE(port, 2); // ports and addresses are network order
  buf.writeUInt32BE(ipv4, 4);
  return buf;
}

function encodeIn6(address: string, port: number): Buffer {
  const buf = zeroed(SOCKADDR_IN6_SIZE);
  writeHostU16(buf, AF_INET6, 0);
  buf.writeUInt16BE(port, 2);
  ipv6Bytes(address).copy(buf, 8);
  return buf;
}

/** The 16 bytes of an IPv6 literal (any zone suffix is dropped; sin6_scope_id stays 0). */
export function ipv6Bytes(address: string): Buffer {
  return Buffer.from(ipaddr.IPv6.parse(address.split('%')[0]).toByteArray());
}

const HOST_IS_LITTLE_ENDIAN = os.endianness() === 'LE';

/** sa_family is in host byte order, unlike the port and address that follow it. */
function writeHostU16(buf: Buffer, value: number, offset: number): void {
  if (HOST_IS_LITTLE_ENDIAN) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}

export function familyOf(address: string): Family {
  const family = net.isIP(address);
  if (family === 0) throw new ConfigError(`not an IP address: ${address}`);
  return family as Family;
}

/**
 * The text of the IPv6 address in 16 bytes at offset, exactly as Node writes
 * a datagram's sender (libuv's inet_ntop: lowercase hex, the longest run of
 * two or more zero groups (the first, on a tie) as "::", and the last 32 bits
 * as a dotted quad for ::a.b.c.d and ::ffff:a.b.c.d). Sessions are keyed by
 * this text, so it must match Node's to the character (unit-tested against it).
 */
export function formatIpv6(bytes: Buffer, offset: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push(bytes.readUInt16BE(offset + 2 * i));
  let bestBase = -1;
  let bestLength = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    const base = i;
    while (i < 8 && words[i] === 0) i++;
    if (i - base > bestLength) {
      bestBase = base;
      bestLength = i - base;
    }
  }
  if (bestLength < 2) bestBase = -1;
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLength) {
      if (i === bestBase) text += ':';
      continue;
    }
    if (i !== 0) text += ':';
    if (i === 6 && bestBase === 0 &&
        (bestLength === 6 || (bestLength === 7 && words[7] !== 1) || (bestLength === 5 && words[5] === 0xffff))) {
      return text + `${bytes[offset + 12]}.${bytes[offset + 13]}.${bytes[offset + 14]}.${bytes[offset + 15]}`;
    }
    text += words[i].toString(16);
  }
  if (bestBase !== -1 && bestBase + bestLength === 8) text += ':';
  return text;
}
