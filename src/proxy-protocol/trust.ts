// Who may send a PROXY header: a spoofed source is a privilege, so only the
// fronts an operator names (proxy-from) get it. Pure.
import * as net from 'node:net';
import ipaddr from 'ipaddr.js';
import { ConfigError, echo } from '../errors';

/** CIDR texts to their canonical form ("2001:DB8::/32" -> "2001:db8::/32"); an address alone is a /32 or /128. */
export function parseCidrList(list: readonly string[], what: string): string[] {
  return list.map((text) => {
    const [address, length, extra] = text.split('/');
    const family = net.isIP(address);
    const max = family === 4 ? 32 : 128;
    const bits = length === undefined ? max : /^\d{1,3}$/.test(length) ? Number(length) : NaN;
    if (family === 0 || extra !== undefined || !(bits >= 0 && bits <= max)) {
      throw new ConfigError(`${what}: '${echo(text)}' is not an address or CIDR (e.g. 10.0.0.0/8, 2001:db8:f::/48)`);
    }
    const network = ipaddr.parse(address);
    return `${network.toString()}/${bits}`;
  });
}

/**
 * A test for a sender's address (as the kernel gives it: an IPv4 client of a
 * [::] listener is ::ffff:a.b.c.d, matched as the IPv4 address it is).
 */
export function trustedSenders(cidrs: readonly string[]): (address: string) => boolean {
  const ranges = cidrs.map((c) => ipaddr.parseCIDR(c));
  const matches = (address: string): boolean => {
    let parsed: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      parsed = ipaddr.process(address);
    } catch {
      return false;
    }
    return ranges.some(([network, bits]) => network.kind() === parsed.kind() && parsed.match(network, bits));
  };
  // Fronts are few and each sends many connections: parsing the address
  // every time showed in the header's cost per connection. Bounded: a flood
  // of untrusted senders empties it, it never grows past SENDER_CACHE_SIZE.
  const known = new Map<string, boolean>();
  return (address) => {
    let trusted = known.get(address);
    if (trusted === undefined) {
      trusted = matches(address);
      if (known.size >= SENDER_CACHE_SIZE) known.clear();
      known.set(address, trusted);
    }
    return trusted;
  };
}

const SENDER_CACHE_SIZE = 1024;
