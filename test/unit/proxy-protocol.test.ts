import t from 'tap';
import * as pp from 'proxy-protocol-js';
import { parseProxyHeader, writeProxyHeader, writeLocalHeader, V2_SIGNATURE } from '../../src/proxy-protocol';

const v2 = (verCmd: number, fam: number, body: number[]) =>
  Buffer.concat([V2_SIGNATURE, Buffer.from([verCmd, fam, body.length >> 8, body.length & 0xff, ...body])]);
const V4_BODY = [192, 0, 2, 7, 198, 51, 100, 1, 0x30, 0x39, 0x01, 0xbb]; // 192.0.2.7:12345 -> 198.51.100.1:443

t.test('v1: the spec\'s TCP4, TCP6 and UNKNOWN lines', async (t) => {
  const line = 'PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n';
  t.same(parseProxyHeader(Buffer.from(line + 'GET /'), 'v1'), { status: 'ok', length: line.length, header: {
    command: 'proxy', version: 1, family: 4, transport: 'stream',
    source: { address: '192.0.2.7', port: 56324 }, destination: { address: '198.51.100.1', port: 443 } } });
  const six = parseProxyHeader(Buffer.from('PROXY TCP6 2001:DB8::7 2001:db8:0:0:0:0:0:1 1 65535\r\n'), 'any');
  t.match(six, { status: 'ok', header: { family: 6, source: { address: '2001:db8::7', port: 1 },
    destination: { address: '2001:db8::1', port: 65535 } } });
  t.match(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n'), 'v1'), { status: 'ok', length: 15, header: { command: 'local', why: 'unknown' } });
  const worst = `PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
  t.equal(worst.length, 107);
  t.match(parseProxyHeader(Buffer.from(worst), 'v1'), { status: 'ok', length: 107 });
});

t.test('v1: anything not exactly the spec is refused', async (t) => {
  const bad = [
    'PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n', // lone LF
    'PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\rX',
    'PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n', // heading zero
    'PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n',
    'PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n',
    'PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n', // family mismatch
    'PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n',
    'PROXY TCP6 2001:db8::1%eth0 2001:db8::1 1 2\r\n',
    'PROXY TCP6 1:2:3:4:5:6:7:8:9 2001:db8::1 1 2\r\n',
    'PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n',
    'PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n',
    'PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n',
  ];
  for (const line of bad) t.match(parseProxyHeader(Buffer.from(line), 'v1'), { status: 'invalid', problem: 'malformed' }, line);
  t.match(parseProxyHeader(Buffer.from('PROXY ' + 'x'.repeat(101)), 'v1'), { status: 'invalid', problem: 'too-long' });
  t.match(parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7 198.'), 'v1'), { status: 'incomplete' });
  t.match(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r'), 'v1'), { status: 'incomplete' });
  t.match(parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n'), 'any'), { status: 'invalid', problem: 'not-proxy' });
  t.match(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n'), 'v2'), { status: 'invalid', problem: 'version-not-accepted' });
});

t.test('v2: PROXY over IPv4 and IPv6, TLVs skipped, payload after the header', async (t) => {
  const tlv = [0x04, 0x00, 0x03, 0x61, 0x62, 0x63]; // PP2_TYPE_NOOP, 3 bytes
  const header = v2(0x21, 0x11, [...V4_BODY, ...tlv]);
  const result = parseProxyHeader(Buffer.concat([header, Buffer.from('hello')]), 'v2');
  t.same(result, { status: 'ok', length: header.length, header: { command: 'proxy', version: 2, family: 4, transport: 'stream',
    source: { address: '192.0.2.7', port: 12345 }, destination: { address: '198.51.100.1', port: 443 } } });
  const six = [...Buffer.from('20010db8000000000000000000000007', 'hex'), ...Buffer.from('20010db8000000000000000000000001', 'hex'), 0, 53, 0, 53];
  t.match(parseProxyHeader(v2(0x21, 0x22, six), 'any'), { status: 'ok', header: { family: 6, transport: 'dgram',
    source: { address: '2001:db8::7', port: 53 }, destination: { address: '2001:db8::1', port: 53 } } });
  const mapped = [...Buffer.from('00000000000000000000ffffc0000207', 'hex'), ...Buffer.from('20010db8000000000000000000000001', 'hex'), 0, 1, 0, 2];
  t.match(parseProxyHeader(v2(0x21, 0x21, mapped), 'v2'), { status: 'ok', header: { family: 4, source: { address: '192.0.2.7' } } });
});

t.test('v2: LOCAL, UNSPEC and the refusals', async (t) => {
  t.match(parseProxyHeader(v2(0x20, 0x00, []), 'v2'), { status: 'ok', length: 16, header: { command: 'local', why: 'local' } });
  t.match(parseProxyHeader(v2(0x20, 0x11, V4_BODY), 'v2'), { status: 'ok', length: 28, header: { command: 'local' } });
  t.match(parseProxyHeader(v2(0x21, 0x00, []), 'v2'), { status: 'ok', header: { command: 'local', why: 'unknown' } });
  const refused: [Buffer, string][] = [
    [v2(0x11, 0x11, V4_BODY), 'bad-version'],
    [v2(0x22, 0x11, V4_BODY), 'bad-command'],
    [v2(0x21, 0x41, V4_BODY), 'bad-family'],
    [v2(0x21, 0x13, V4_BODY), 'bad-transport'],
    [v2(0x21, 0x31, new Array(216).fill(0)), 'unix-family'],
    [v2(0x21, 0x11, V4_BODY.slice(0, 11)), 'short-addresses'],
    [v2(0x21, 0x21, V4_BODY), 'short-addresses'],
    [v2(0x21, 0x11, new Array(5000).fill(0)), 'too-long'],
  ];
  for (const [buf, problem] of refused) t.match(parseProxyHeader(buf, 'v2'), { status: 'invalid', problem }, problem);
  t.match(parseProxyHeader(v2(0x21, 0x11, V4_BODY), 'v1'), { status: 'invalid', problem: 'version-not-accepted' });
  t.match(parseProxyHeader(v2(0x21, 0x11, V4_BODY).subarray(0, 20), 'v2'), { status: 'incomplete' });
  t.match(parseProxyHeader(V2_SIGNATURE.subarray(0, 5), 'any'), { status: 'incomplete' });
  t.match(parseProxyHeader(Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x01]), 'any'), { status: 'invalid', problem: 'not-proxy' });
});

t.test('the writer: what it writes parses back, v1 and v2, both families and mixed', async (t) => {
  const cases = [
    [{ address: '192.0.2.7', port: 1000 }, { address: '198.51.100.1', port: 80 }, 4, '192.0.2.7'],
    [{ address: '2001:db8::7', port: 1000 }, { address: '2001:db8::1', port: 80 }, 6, '2001:db8::7'],
    [{ address: '192.0.2.7', port: 1000 }, { address: '2001:db8::1', port: 80 }, 4, '192.0.2.7'], // mapped in a TCP6/INET6 header
  ] as const;
  for (const [src, dst, family, address] of cases) {
    for (const version of ['v1', 'v2'] as const) {
      const buf = writeProxyHeader(version, 'stream', src, dst);
      t.match(parseProxyHeader(buf, version), { status: 'ok', length: buf.length,
        header: { command: 'proxy', family, source: { address, port: 1000 }, destination: { port: 80 } } }, `${version} ${address}`);
    }
  }
  t.equal(writeProxyHeader('v1', 'stream', cases[0][0], cases[0][1]).toString(), 'PROXY TCP4 192.0.2.7 198.51.100.1 1000 80\r\n');
  t.match(parseProxyHeader(writeLocalHeader(), 'v2'), { status: 'ok', length: 16, header: { command: 'local', why: 'local' } });
});

t.test('agrees with proxy-protocol-js both ways', async (t) => {
  const v1 = new pp.V1ProxyProtocol(pp.INETProtocol.TCP4, new pp.Peer('192.0.2.9', 4242), new pp.Peer('198.51.100.2', 25)).build();
  t.match(parseProxyHeader(Buffer.from(v1), 'any'), { status: 'ok', header: { source: { address: '192.0.2.9', port: 4242 } } });
  const built = new pp.V2ProxyProtocol(pp.Command.PROXY, pp.TransportProtocol.DGRAM, new pp.IPv6ProxyAddress(
    pp.IPv6Address.createFrom([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]), 5353,
    pp.IPv6Address.createFrom([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 53)).build();
  t.match(parseProxyHeader(Buffer.from(built), 'v2'), { status: 'ok', header: { family: 6, transport: 'dgram',
    source: { address: '2001:db8::9', port: 5353 }, destination: { address: '2001:db8::1', port: 53 } } });
  const ours = writeProxyHeader('v2', 'stream', { address: '192.0.2.9', port: 4242 }, { address: '198.51.100.2', port: 25 });
  const theirs = pp.V2ProxyProtocol.parse(new Uint8Array(ours));
  t.equal(theirs.command, pp.Command.PROXY);
  t.match(theirs.proxyAddress, { sourcePort: 4242, destinationPort: 25 });
  const line = writeProxyHeader('v1', 'stream', { address: '2001:db8::9', port: 4242 }, { address: '2001:db8::1', port: 25 });
  t.match(pp.V1ProxyProtocol.parse(line.toString('latin1')), { source: { ipAddress: '2001:db8::9', port: 4242 } });
});
