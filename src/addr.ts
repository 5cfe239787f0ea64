// Endpoints and addresses: parsing "ADDR:PORT" / "[V6]:PORT", and the
// ::ffff:a.b.c.d unmapping a dual-stack listener needs. Pure, no I/O.
import * as net from 'node:net';
import ipaddr from 'ipaddr.js';
import { ConfigError, echo } from './errors';
import type { Family } from './sys/sockaddr';

export interface Endpoint {
  readonly address: string;
  readonly port: number;
  readonly family: Family;
}

/**
 * Parse "192.0.2.1:80" or "[2001:db8::1]:80". The host must be an IP literal
 * (net.isIP: ipaddr.js would take '1.2.3'), and not IPv4-mapped: relay speaks
 * IPv4 to IPv4 addresses, so ::ffff:a.b.c.d is written a.b.c.d.
 */
export function parseEndpoint(text: string, what = 'address'): Endpoint {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!match) {
    throw new ConfigError(
      `${what} must be ADDR:PORT, with IPv6 in brackets ([2001:db8::1]:80): got '${echo(text)}'`,
    );
  }
  const [, host, portText] = match;
  // net.isIP takes 'fe80::1%eth0'; relay's sockaddrs, rules and recipes carry no zone.
  if (host.includes('%')) {
    throw new ConfigError(`${what} '${echo(text)}': '${echo(host.slice(host.indexOf('%')))}' is a zone ID, which relay does not take: ` +
      'use a global or ULA address');
  }
  const family = net.isIP(host);
  if (family === 0) throw new ConfigError(`${what} '${echo(text)}': '${echo(host)}' is not an IP address`);
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(`${what} '${echo(text)}': port must be 1-65535`);
  }
  const parsed = ipaddr.parse(host);
  if (parsed.range() === 'ipv4Mapped') {
    throw new ConfigError(`${what} '${text}' is an IPv4-mapped IPv6 address: write ${ipaddr.process(host).toString()}`);
  }
  return Object.freeze({ address: parsed.toString(), port, family: family as Family });
}

/** Why an address cannot be a backend (relay connects to one host there), or undefined. */
export function backendAddressProblem(address: string): string | undefined {
  switch (ipaddr.parse(address).range()) {
    case 'unspecified': return 'is the unspecified address, not a host';
    case 'broadcast': return 'is the broadcast address: a backend is one host (unicast)';
    case 'multicast': return 'is a multicast address: a backend is one host (unicast)';
    case 'linkLocal':
      // IPv4 link-local needs no zone; IPv6 does, and an endpoint has none.
      return familyOfAddress(address) === 6
        ? 'is IPv6 link-local: without a zone every connect fails (EINVAL): use a global or ULA address' : undefined;
    default: return undefined;
  }
}

/** Why an address cannot be listened on for clients' connections and datagrams, or undefined. */
export function listenAddressProblem(address: string): string | undefined {
  const range = ipaddr.parse(address).range();
  if (range === 'broadcast' || range === 'multicast') return `is a ${range} address: listen on a unicast or wildcard address`;
  if (range === 'linkLocal' && familyOfAddress(address) === 6) {
    return 'is IPv6 link-local: binding it needs a zone (bind EINVAL without one), which relay does not take: ' +
      'listen on a global or ULA address, or on [::]';
  }
  return undefined;
}

/** Why an address cannot be relay's own address as the backends see it (their gateway), or undefined. */
export function relayAddressProblem(address: string): string | undefined {
  if (address.includes('%')) return 'has a zone ID, which relay does not take: use a global or ULA address';
  const range = ipaddr.parse(address).range();
  if (range === 'unspecified' || range === 'loopback' || range === 'broadcast' || range === 'multicast') {
    return `is ${range === 'unspecified' || range === 'broadcast' ? 'the' : 'a'} ${range} address: ` +
      "give relay's own address on the backends' network (the backends route via it)";
  }
  if (range === 'linkLocal' && familyOfAddress(address) === 6) {
    return 'is IPv6 link-local: a route via it needs the backend\'s interface (ip -6 route replace default via ' +
      `${address} dev IFACE), which relay cannot know: give a global or ULA address, or write that route by hand`;
  }
  return undefined;
}

export function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

export function isLoopback(address: string): boolean {
  return ipaddr.parse(address).range() === 'loopback';
}

/** Canonical text form: lower-case, compressed IPv6. */
export function normalize(address: string): string {
  return ipaddr.parse(address).toString();
}

/** "::ffff:192.0.2.7" -> "192.0.2.7"; anything else unchanged. */
export function unmapAddress(address: string): string {
  if (!address.includes('.') || !address.includes(':')) return address;
  return ipaddr.process(address).toString();
}

export function formatEndpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * The family of an address already known to be valid (from the config, or
 * from the kernel). A colon is enough: net.isIPv6's regular expression,
 * run for every accepted client, showed in the connection-rate profile.
 */
export function familyOfAddress(address: string): Family {
  return address.includes(':') ? 6 : 4;
}
