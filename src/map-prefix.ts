// --map-ipv4-prefix: an IPv4 client going to an IPv6 backend is relayed from
// an IPv6 address that embeds the client's IPv4 address, as RFC 6052 (the
// NAT64 address format) lays it out, so the backend sees who the client is.
// Pure: parsing, the mapping and its inverse; no I/O.
import * as net from 'node:net';
import ipaddr from 'ipaddr.js';
import { ConfigError, echo } from './errors';

/** The prefix lengths RFC 6052 section 2.2 defines. */
export const MAP_PREFIX_LENGTHS = [32, 40, 48, 56, 64, 96] as const;
export type MapPrefixLength = (typeof MAP_PREFIX_LENGTHS)[number];

/** RFC 6052's well-known prefix: for global IPv4 addresses only, and usually a real NAT64's. */
export const WELL_KNOWN_PREFIX = '64:ff9b::';

export interface MapPrefix {
  /** Canonical text of the prefix address, e.g. '2001:db8:64::'. */
  readonly address: string;
  readonly length: MapPrefixLength;
  /** 'PREFIX/LEN', as given back in logs, recipes and the effective configuration. */
  readonly text: string;
  /** The 16 bytes of the prefix (zero beyond its length). */
  readonly bytes: readonly number[];
}

/** Bits 64-71 of the address (RFC 6052's "u" octet): always zero, never part of the IPv4 address. */
const U_OCTET = 8;

/** Parse 'PREFIX/LEN' (a --map-ipv4-prefix value); one line naming the rule broken, otherwise. */
export function parseMapPrefix(text: string, what = '--map-ipv4-prefix'): MapPrefix {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!match || net.isIPv6(match[1]) === false || match[1].includes('%')) {
    throw new ConfigError(`${what} must be an IPv6 prefix such as 2001:db8:64::/96: got '${echo(text)}'`);
  }
  const length = Number(match[2]);
  if (!(MAP_PREFIX_LENGTHS as readonly number[]).includes(length)) {
    throw new ConfigError(`${what} ${echo(text)}: the length must be /96 or another of RFC 6052's ` +
      `(${MAP_PREFIX_LENGTHS.map((l) => `/${l}`).join(', ')}): got /${length}`);
  }
  const parsed = ipaddr.IPv6.parse(match[1]);
  const range = parsed.range();
  if (['ipv4Mapped', 'unspecified', 'loopback', 'multicast', 'linkLocal'].includes(range)) {
    throw new ConfigError(`${what} ${echo(text)} is in the ${range} range: ` +
      'give a network-specific prefix from your own space (e.g. 2001:db8:64::/96)');
  }
  const bytes = parsed.toByteArray();
  const address = parsed.toString();
  const masked = maskedText(bytes, length);
  if (masked !== address) {
    throw new ConfigError(`${what} ${echo(text)} has bits set past /${length}: write ${masked}/${length}`);
  }
  return Object.freeze({ address, length: length as MapPrefixLength, text: `${address}/${length}`, bytes: Object.freeze(bytes) });
}

/** The prefix with every bit past length cleared, as text. */
function maskedText(bytes: readonly number[], length: number): string {
  const masked = bytes.map((b, i) => (i * 8 >= length ? 0 : b & (0xff << (8 - Math.min(8, length - i * 8))) & 0xff));
  return ipaddr.fromByteArray(masked).toString();
}

export function isWellKnownPrefix(prefix: MapPrefix): boolean {
  return prefix.address === WELL_KNOWN_PREFIX && prefix.length === 96;
}

/** Why the well-known prefix is a poor choice, for the start-up warning and doctor. */
export const WELL_KNOWN_WARNING = 'the well-known prefix 64:ff9b::/96 must not carry non-global IPv4 addresses ' +
  '(RFC 6052 section 3.1: private, documentation and other special ranges), and routing it to relay takes it from ' +
  'any real NAT64 on the backends\' network: use a network-specific prefix from your own space, e.g. a /96 of your /64';

/** The client's IPv4 address inside the prefix (RFC 6052 section 2.2): '192.0.2.2' in 2001:db8:64::/96 is 2001:db8:64::c000:202. */
export function mapIpv4(prefix: MapPrefix, ipv4: string): string {
  const bytes = [...prefix.bytes];
  let at = prefix.length / 8;
  for (const octet of ipaddr.IPv4.parse(ipv4).octets) {
    if (at === U_OCTET) at++;
    bytes[at++] = octet;
  }
  return ipaddr.fromByteArray(bytes).toString();
}

/** The IPv4 address an address of the prefix embeds, or undefined when it is not in the prefix. */
export function unmapIpv4(prefix: MapPrefix, ipv6: string): string | undefined {
  if (!net.isIPv6(ipv6)) return undefined;
  const parsed = ipaddr.IPv6.parse(ipv6);
  if (!parsed.match(ipaddr.IPv6.parse(prefix.address), prefix.length)) return undefined;
  const bytes = parsed.toByteArray();
  const octets: number[] = [];
  for (let at = prefix.length / 8; octets.length < 4; at++) if (at !== U_OCTET) octets.push(bytes[at]);
  return octets.join('.');
}
