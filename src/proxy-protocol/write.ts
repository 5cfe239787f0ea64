// PROXY protocol headers relay sends to its backends (send-proxy), and, for
// UDP fronts that want them, before its replies (proxy-reply-header).
import ipaddr from 'ipaddr.js';
import { V2_SIGNATURE, V2_FIXED_LENGTH, type ProxyAddress, type ProxyTransport } from './parse';

export type SendProxyVersion = 'v1' | 'v2';

/**
 * One header naming source -> destination. When the two are of different
 * families (a v4 client, a v6 backend), both are written as IPv6, the v4 one
 * mapped (::ffff:a.b.c.d): the client's identity is kept whatever the socket's.
 */
export function writeProxyHeader(version: SendProxyVersion, transport: ProxyTransport,
  source: ProxyAddress, destination: ProxyAddress): Buffer {
  const [src, dst] = sameFamily(source.address, destination.address);
  return version === 'v1' ? v1Line(src, source.port, dst, destination.port)
    : v2Header(transport, src, source.port, dst, destination.port);
}

/** A v2 LOCAL header: the sender speaks for itself (a health check, a probe). */
export function writeLocalHeader(): Buffer {
  const header = Buffer.alloc(V2_FIXED_LENGTH);
  V2_SIGNATURE.copy(header, 0);
  header[12] = 0x20; // version 2, LOCAL
  header[13] = 0x00; // UNSPEC
  return header;
}

function sameFamily(a: string, b: string): [ipaddr.IPv4 | ipaddr.IPv6, ipaddr.IPv4 | ipaddr.IPv6] {
  const pa = ipaddr.process(a);
  const pb = ipaddr.process(b);
  if (pa.kind() === pb.kind()) return [pa, pb];
  const v6 = (x: ipaddr.IPv4 | ipaddr.IPv6) => (x.kind() === 'ipv4' ? (x as ipaddr.IPv4).toIPv4MappedAddress() : x);
  return [v6(pa), v6(pb)];
}

function v1Line(src: ipaddr.IPv4 | ipaddr.IPv6, sport: number, dst: ipaddr.IPv4 | ipaddr.IPv6, dport: number): Buffer {
  const proto = src.kind() === 'ipv4' ? 'TCP4' : 'TCP6';
  // Compressed hex groups (RFC 5952), never a dotted quad inside IPv6, as the spec's v1 form wants.
  const text = (x: ipaddr.IPv4 | ipaddr.IPv6) => (x.kind() === 'ipv4' ? x.toString() : (x as ipaddr.IPv6).toRFC5952String());
  return Buffer.from(`PROXY ${proto} ${text(src)} ${text(dst)} ${sport} ${dport}\r\n`, 'latin1');
}

function v2Header(transport: ProxyTransport, src: ipaddr.IPv4 | ipaddr.IPv6, sport: number,
  dst: ipaddr.IPv4 | ipaddr.IPv6, dport: number): Buffer {
  const v4 = src.kind() === 'ipv4';
  const size = v4 ? 4 : 16;
  const addressBlock = 2 * size + 4;
  const header = Buffer.alloc(V2_FIXED_LENGTH + addressBlock);
  V2_SIGNATURE.copy(header, 0);
  header[12] = 0x21; // version 2, PROXY
  header[13] = ((v4 ? 1 : 2) << 4) | (transport === 'stream' ? 1 : 2);
  header.writeUInt16BE(addressBlock, 14);
  header.set(src.toByteArray(), V2_FIXED_LENGTH);
  header.set(dst.toByteArray(), V2_FIXED_LENGTH + size);
  header.writeUInt16BE(sport, V2_FIXED_LENGTH + 2 * size);
  header.writeUInt16BE(dport, V2_FIXED_LENGTH + 2 * size + 2);
  return header;
}

