// The PROXY protocol header (HAProxy's doc/proxy-protocol.txt, versions 1 and
// 2), read from the first bytes of a connection or of a datagram. Pure: no I/O,
// no throw. Every read is checked against the buffer's length and against the
// header's own length field, so a hostile or truncated header can only give an
// 'invalid' or 'incomplete' result.
import ipaddr from 'ipaddr.js';
import type { Family } from '../sys/sockaddr';

/** Which header versions a listener accepts; 'any' tells them apart by their first bytes. */
export type ProxyVersionMode = 'v1' | 'v2' | 'any';

export type ProxyTransport = 'stream' | 'dgram';

export interface ProxyAddress {
  readonly address: string;
  readonly port: number;
}

/** The front forwards a client: relay takes source as the client's identity. */
export interface ProxiedHeader {
  readonly command: 'proxy';
  readonly version: 1 | 2;
  readonly family: Family;
  /** v1 is always a stream (TCP4/TCP6). */
  readonly transport: ProxyTransport;
  readonly source: ProxyAddress;
  readonly destination: ProxyAddress;
}

/**
 * The front speaks for itself (v2 LOCAL: its health checks), or cannot name
 * the client (v1 UNKNOWN, v2 UNSPEC family or transport): per the spec, the
 * connection is served with its real addresses, which here means from relay's own.
 */
export interface LocalHeader {
  readonly command: 'local';
  readonly version: 1 | 2;
  readonly why: 'local' | 'unknown';
}

export type ProxyHeader = ProxiedHeader | LocalHeader;

/** Why a header is refused; each is counted on its own. */
export type ProxyHeaderProblem =
  | 'not-proxy' // neither signature
  | 'version-not-accepted' // a valid signature of a version this listener does not take
  | 'bad-version' // v2 signature with a version nibble other than 2
  | 'bad-command'
  | 'bad-family'
  | 'bad-transport'
  | 'unix-family' // AF_UNIX with PROXY: there is no address to spoof
  | 'too-long' // v1 without CRLF in 107 bytes; v2 longer than maxLength
  | 'short-addresses' // v2 length smaller than its family's address block
  | 'malformed'; // v1 line not exactly as the spec says

export type ProxyParseResult =
  | { readonly status: 'ok'; readonly header: ProxyHeader; /** Header bytes: payload starts here. */ readonly length: number }
  | { readonly status: 'incomplete' }
  | { readonly status: 'invalid'; readonly problem: ProxyHeaderProblem };

/** v1's longest line, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses and ports). */
export const V1_MAX_LENGTH = 107;
/** v2's fixed part: signature (12), version and command (1), family and transport (1), length (2). */
export const V2_FIXED_LENGTH = 16;
/**
 * v2 headers relay accepts, TLVs included. The length field allows 65,551
 * bytes; a front's TLVs (ALPN, authority, TLS details) stay far below this,
 * and relay holds no more than this per connection before it knows whom to trust.
 */
export const V2_DEFAULT_MAX_LENGTH = 4096;

export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1');

/** v2 address block sizes: INET 4+4+2+2, INET6 16+16+2+2, UNIX 108+108. */
const V2_ADDRESS_LENGTH = { inet: 12, inet6: 36, unix: 216 } as const;

const INCOMPLETE: ProxyParseResult = Object.freeze({ status: 'incomplete' });

function invalid(problem: ProxyHeaderProblem): ProxyParseResult {
  return { status: 'invalid', problem };
}

/**
 * The header at the start of buf. 'incomplete' only while buf is a prefix of
 * some valid header (never beyond each version's bound), so a caller that
 * reads until the result is not 'incomplete' holds at most maxLength bytes.
 */
export function parseProxyHeader(buf: Uint8Array, mode: ProxyVersionMode,
  maxLength: number = V2_DEFAULT_MAX_LENGTH): ProxyParseResult {
  if (buf.length === 0) return INCOMPLETE;
  const looksV2 = buf[0] === V2_SIGNATURE[0];
  const looksV1 = buf[0] === V1_SIGNATURE[0];
  if (looksV2) {
    if (!isPrefixOf(buf, V2_SIGNATURE)) return invalid('not-proxy');
    if (mode === 'v1') return invalid('version-not-accepted');
    return parseV2(buf, maxLength);
  }
  if (looksV1) {
    if (!isPrefixOf(buf, V1_SIGNATURE)) return invalid('not-proxy');
    if (mode === 'v2') return invalid('version-not-accepted');
    return parseV1(buf);
  }
  return invalid('not-proxy');
}

/** Whether the bytes buf and signature share (the shorter's length) are equal. */
function isPrefixOf(buf: Uint8Array, signature: Uint8Array): boolean {
  const n = Math.min(buf.length, signature.length);
  for (let i = 0; i < n; i++) if (buf[i] !== signature[i]) return false;
  return true;
}

// ---- version 2 ----

function parseV2(buf: Uint8Array, maxLength: number): ProxyParseResult {
  if (buf.length < V2_FIXED_LENGTH) return INCOMPLETE;
  const versionCommand = buf[12];
  if (versionCommand >> 4 !== 2) return invalid('bad-version');
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid('bad-command');
  const familyByte = buf[13] >> 4;
  const transportByte = buf[13] & 0x0f;
  if (familyByte > 3) return invalid('bad-family');
  if (transportByte > 2) return invalid('bad-transport');
  const total = V2_FIXED_LENGTH + ((buf[14] << 8) | buf[15]);
  if (total > maxLength) return invalid('too-long');
  if (buf.length < total) return INCOMPLETE;
  // LOCAL: the addresses (if any) are skipped by the length, never read.
  if (command === 0) return ok({ command: 'local', version: 2, why: 'local' }, total);
  if (familyByte === 0 || transportByte === 0) return ok({ command: 'local', version: 2, why: 'unknown' }, total);
  if (familyByte === 3) return invalid('unix-family');
  const addresses = total - V2_FIXED_LENGTH;
  const family: Family = familyByte === 1 ? 4 : 6;
  if (addresses < (family === 4 ? V2_ADDRESS_LENGTH.inet : V2_ADDRESS_LENGTH.inet6)) return invalid('short-addresses');
  // Whatever follows the address block up to total is TLVs: skipped, bounded by total.
  return ok(v2Addresses(buf, family, transportByte === 1 ? 'stream' : 'dgram'), total);
}

function v2Addresses(buf: Uint8Array, family: Family, transport: ProxyTransport): ProxiedHeader {
  const size = family === 4 ? 4 : 16;
  const at = V2_FIXED_LENGTH;
  const ports = at + 2 * size;
  const source = { address: binaryAddress(buf, at, size), port: (buf[ports] << 8) | buf[ports + 1] };
  const destination = { address: binaryAddress(buf, at + size, size), port: (buf[ports + 2] << 8) | buf[ports + 3] };
  // A v4 client carried as ::ffff:a.b.c.d is a v4 client: it is bound and balanced as one.
  return { command: 'proxy', version: 2, family: familyOf(source.address), transport, source, destination };
}

function binaryAddress(buf: Uint8Array, at: number, size: 4 | 16): string {
  if (size === 4) return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((buf[at + i] << 8) | buf[at + i + 1]).toString(16));
  return canonical(groups.join(':'));
}

/** Compressed lower-case IPv6, or the dotted IPv4 an IPv4-mapped address stands for. */
function canonical(v6: string): string {
  return ipaddr.process(v6).toString();
}

function familyOf(address: string): Family {
  return address.includes(':') ? 6 : 4;
}

function ok(header: ProxyHeader, length: number): ProxyParseResult {
  return { status: 'ok', header, length };
}

// ---- version 1 ----

const CR = 0x0d;
const LF = 0x0a;

function parseV1(buf: Uint8Array): ProxyParseResult {
  const end = Math.min(buf.length, V1_MAX_LENGTH);
  for (let i = 0; i < end; i++) {
    if (buf[i] === LF) return invalid('malformed'); // a lone LF: the spec wants exactly CRLF
    if (buf[i] !== CR) continue;
    if (i + 1 >= buf.length) return INCOMPLETE;
    if (buf[i + 1] !== LF) return invalid('malformed');
    return parseV1Line(Buffer.from(buf.buffer, buf.byteOffset, i).toString('latin1'), i + 2);
  }
  return buf.length >= V1_MAX_LENGTH ? invalid('too-long') : INCOMPLETE;
}

const V1_IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const V1_IPV6_CHARS = /^[0-9a-fA-F:]{2,39}$/;
const V1_PORT = /^(?:0|[1-9]\d{0,4})$/;

/** line: the header without its CRLF; length: with it. */
function parseV1Line(line: string, length: number): ProxyParseResult {
  const fields = line.split(' ');
  if (fields[1] === 'UNKNOWN') return ok({ command: 'local', version: 1, why: 'unknown' }, length);
  if (fields.length !== 6 || (fields[1] !== 'TCP4' && fields[1] !== 'TCP6')) return invalid('malformed');
  const family: Family = fields[1] === 'TCP4' ? 4 : 6;
  const source = v1Address(fields[2], fields[4], family);
  const destination = v1Address(fields[3], fields[5], family);
  if (!source || !destination) return invalid('malformed');
  return ok({ command: 'proxy', version: 1, family: familyOf(source.address), transport: 'stream', source, destination },
    length);
}

function v1Address(address: string, port: string, family: Family): ProxyAddress | undefined {
  if (!V1_PORT.test(port) || Number(port) > 65535) return undefined;
  if (family === 4) return V1_IPV4.test(address) ? { address, port: Number(port) } : undefined;
  if (!V1_IPV6_CHARS.test(address) || !isIPv6Text(address)) return undefined;
  return { address: canonical(address), port: Number(port) };
}

/** Hex groups with at most one '::' and exactly 128 bits (the spec's form: no embedded IPv4, no zone). */
function isIPv6Text(text: string): boolean {
  const halves = text.split('::');
  if (halves.length > 2) return false;
  const groups = (half: string): string[] | undefined => {
    if (half === '') return [];
    const parts = half.split(':');
    return parts.every((p) => p.length >= 1 && p.length <= 4) ? parts : undefined;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return false;
  const count = head.length + tail.length;
  return halves.length === 2 ? count <= 7 : count === 8;
}
