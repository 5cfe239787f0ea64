import t from 'tap';
import { encodeSockaddr, SOCKADDR_IN_SIZE, SOCKADDR_IN6_SIZE } from '../../src/sys/sockaddr';
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
