import t from 'tap';
import ipaddr from 'ipaddr.js';
import { clientHash, murmur3, writeAddressBytes } from '../../src/balance/hash';

t.test('murmur3 x86_32 matches the reference vectors', async (t) => {
  const vectors: [string, number, number][] = [
    ['', 0, 0],
    ['', 1, 0x514e28b7],
    ['', 0xffffffff, 0x81f16f39],
    ['test', 0, 0xba6bd213],
    ['hello', 0, 0x248bfa47],
    ['Hello, world!', 0, 0xc0363e43],
    ['Hello, world!', 1234, 0xfaf6cdb3],
    ['The quick brown fox jumps over the lazy dog', 0, 0x2e4ff723],
  ];
  for (const [text, seed, expected] of vectors) {
    const bytes = Buffer.from(text);
    t.equal(murmur3(bytes, bytes.length, seed), expected, `'${text}' seed ${seed}`);
  }
});

t.test('a client hashes by its address bytes, whatever their spelling', async (t) => {
  const v4 = clientHash('192.0.2.1');
  t.equal(clientHash('::ffff:192.0.2.1'), v4, 'mapped, dotted');
  t.equal(clientHash('::ffff:c000:201'), v4, 'mapped, hex');
  t.not(clientHash('192.0.2.2'), v4);
  t.equal(clientHash('2001:0db8:0:0:0:0:0:1'), clientHash('2001:db8::1'));
  t.not(clientHash('2001:db8::2'), clientHash('2001:db8::1'));
  t.equal(clientHash('192.0.2.1'), v4, 'stable');
});

t.test('the port counts only when given', async (t) => {
  t.not(clientHash('192.0.2.1', 5353), clientHash('192.0.2.1'));
  t.not(clientHash('192.0.2.1', 5353), clientHash('192.0.2.1', 5354));
  t.equal(clientHash('2001:db8::1', 5353), clientHash('2001:db8::1', 5353));
});

t.test('anything but an IP literal is refused', async (t) => {
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', '1.2.3.4 ', 'host', '2001:db8::g', '::ffff:1.2.3.256']) {
    t.throws(() => clientHash(bad), JSON.stringify(bad));
  }
});

t.test('address bytes agree with ipaddr.js, in every spelling', async (t) => {
  const fixed = ['::', '::1', '1::', '2001:db8::', '::2001:db8', 'a:b::c:d', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8',
    '2001:DB8::AbCd', 'fe80::1%eth0', '64:ff9b::192.0.2.1', '::ffff:0:0', '0:0:0:0:0:ffff:c000:0201'];
  let state = 7;
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) >>> 16;
  const generated = Array.from({ length: 2000 }, () => {
    // Runs of zero groups, so that '::' lands everywhere.
    const groups = Array.from({ length: 8 }, () => (random() % 3 === 0 ? 0 : random()));
    const address = ipaddr.fromByteArray(groups.flatMap((g) => [g >>> 8, g & 0xff])) as ipaddr.IPv6;
    return [address.toString(), address.toNormalizedString(), address.toString().toUpperCase()];
  }).flat();
  let mismatches = 0;
  for (const text of [...fixed, ...generated]) {
    const parsed = ipaddr.IPv6.parse(text);
    const expected = parsed.isIPv4MappedAddress() ? parsed.toIPv4Address().toByteArray() : parsed.toByteArray();
    const out = new Uint8Array(16);
    const length = writeAddressBytes(text, out);
    if (String([...out.subarray(0, length)]) !== String(expected)) {
      mismatches++;
      t.fail(`${text}: ${[...out.subarray(0, length)]} != ${expected}`);
    }
  }
  t.equal(mismatches, 0, `${fixed.length + generated.length} addresses`);
  for (const bad of [':', ':::', '1:::2', '1::2::3', ':1::', '1::2:', '12345::', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '::g']) {
    t.throws(() => writeAddressBytes(bad, new Uint8Array(16)), bad);
  }
});
