// Endpoints and addresses: parsing "ADDR:PORT" / "[V6]:PORT", and the
// ::ffff:a.b.c.d unmapping a dual-stack listener needs. Pure, no I/O.
import * as net from 'node:net';
import ipaddr from 'ipaddr.js';
import { ConfigError } from './errors';
import type { Family } from './sys/sockaddr';

export interface Endpoint {
  readonly address: string;
  readonly port: number;
  readonly family: Family;
}

/** Parse "192.0.2.1:80" or "[2001:db8::1]:80". The host must be an IP literal. */
export function parseEndpoint(text: string, what = 'address'): Endpoint {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!match) {
    throw new ConfigError(
      `${what} must be ADDR:PORT, with IPv6 in brackets ([2001:db8::1]:80): got '${text}'`,
    );
  }
  const [, host, portText] = match;
  const family = net.isIP(host);
  if (family === 0) throw new ConfigError(`${what} '${text}': '${host}' is not an IP address`);
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(`${what} '${text}': port must be 1-65535`);
  }
  return Object.freeze({ address: normalize(host), port, family: family as Family });
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

export function familyOfAddress(address: string): Family {
  return net.isIPv6(address) ? 6 : 4;
}
