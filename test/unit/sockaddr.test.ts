import t from 'tap';
import * as net from 'node:net';
import { encodeSockaddr, formatIpv6, ipv4Number, SOCKADDR_IN_SIZE, SOCKADDR_IN6_SIZE } from '../../src/sys/sockaddr';
import { ConfigError } from '../../src/errors';

t.test('sockaddr_in: family (host order), port and address (network order)', async (t) => {
  const buf = encodeSockaddr('192.0.2.1', 8080);
  t.equal(buf.length, SOCKADDR_IN_SIZE);
  t.equal(SOCKADDR_IN_SIZE, 16);
  t.same([...buf], [2, 0, 0x1f, 0x90, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
});

t.test('sockaddr_in6: 28 bytes, flowinfo and scope zero', async (t) => {
  const buf = encodeSockaddr('2001:db8::1', 53);
  t.equal(buf.length, SOCKADDR_IN6_SIZE);
  t.equal(SOCKADDR_IN6_SIZE, 28);
  t.same([...buf.subarray(0, 8)], [10, 0, 0, 53, 0, 0, 0, 0]);
  t.same([...buf.subarray(8, 24)], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  t.same([...buf.subarray(24)], [0, 0, 0, 0]);
});

t.test('sockaddr_in6 for an IPv4-mapped address and the wildcard', async (t) => {
  t.same([...encodeSockaddr('::ffff:192.0.2.7', 0).subarray(8, 24)],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]);
  t.same([...encodeSockaddr('::', 0).subarray(8, 24)], new Array(16).fill(0));
});

t.test('rejects bad input', async (t) => {
  t.throws(() => encodeSockaddr('1.2.3', 80), ConfigError);
  t.throws(() => encodeSockaddr('192.0.2.1', 70000), ConfigError);
  t.throws(() => encodeSockaddr('192.0.2.1', -1), ConfigError);
});

/** How Node itself writes the address: the text sessions are keyed by. */
function nodeText(bytes: Buffer): string {
  const full = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(2 * i).toString(16)).join(':');
  return new net.SocketAddress({ address: full, family: 'ipv6' }).address;
}

t.test('ipv4Number accepts exactly what net.isIPv4 accepts, and gives its 32 bits', async (t) => {
  const samples = ['192.0.2.1', '0.0.0.0', '255.255.255.255', '203.0.113.254', '1.2.3.4', '10.0.0.1',
    '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.04', '1..2.3', '1.2.3.', '.1.2.3', '1.2.3.4 ', ' 1.2.3.4',
    '1234.1.1.1', '1.2.3.-4', '1.2.3.a', '', '::ffff:1.2.3.4', '2001:db8::1', '1.2.3.4%eth0', '00.0.0.0', '0.0.0.00'];
  for (const address of samples) {
    const value = ipv4Number(address);
    t.equal(value !== undefined, net.isIPv4(address), `'${address}'`);
    if (value !== undefined) t.equal(value, address.split('.').reduce((n, o) => n * 256 + Number(o), 0), `'${address}' bits`);
  }
  // Every octet value, in every position, against net.isIPv4 and the bits.
  for (let o = 0; o < 300; o++) {
    for (const address of [`${o}.0.0.1`, `1.${o}.2.3`, `9.8.7.${o}`]) {
      t.equal(ipv4Number(address) !== undefined, net.isIPv4(address), address);
    }
  }
  t.equal(ipv4Number('198.51.100.7'), ((198 * 256 + 51) * 256 + 100) * 256 + 7);
});

t.test('formatIpv6 writes every address as Node does', async (t) => {
  const cases: Buffer[] = [];
  // Every pattern of zero and non-zero groups (256), with two kinds of non-zero value,
  // so every run length and position of "::" and every embedded-IPv4 rule is met.
  for (let mask = 0; mask < 256; mask++) {
    for (const value of [1, 0xffff, 0x0db8]) {
      const bytes = Buffer.alloc(16);
      for (let i = 0; i < 8; i++) if (mask & (1 << i)) bytes.writeUInt16BE(value === 0x0db8 ? value + i : value, 2 * i);
      cases.push(bytes);
    }
  }
  for (const text of ['::ffff:192.0.2.7', '::192.0.2.7', '::1', '::', '2001:db8::1', 'fe80::1', '::ffff:0:1', '::0.0.0.1']) {
    cases.push(encodeSockaddr(text, 0).subarray(8, 24));
  }
  let seed = 7;
  for (let n = 0; n < 2000; n++) {
    const bytes = Buffer.alloc(16);
    for (let i = 0; i < 16; i++) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      bytes[i] = seed % 3 === 0 ? 0 : seed % 256; // plenty of zero bytes, so zero groups
    }
    cases.push(bytes);
  }
  const wrong = cases.filter((bytes) => formatIpv6(bytes, 0) !== nodeText(bytes))
    .map((bytes) => `${formatIpv6(bytes, 0)} (Node: ${nodeText(bytes)})`);
  t.same(wrong.slice(0, 5), [], `all ${cases.length} match`);
  t.equal(formatIpv6(Buffer.concat([Buffer.alloc(3), encodeSockaddr('2001:db8::1', 0).subarray(8, 24)]), 3), '2001:db8::1',
    'reads at the offset given');
});
