import t from 'tap';
import { parseEndpoint, unmapAddress, formatEndpoint } from '../../src/addr';
import { ConfigError } from '../../src/errors';

t.test('parses IPv4 and bracketed IPv6 endpoints', async (t) => {
  t.same(parseEndpoint('192.0.2.1:80'), { address: '192.0.2.1', port: 80, family: 4 });
  t.same(parseEndpoint('[2001:DB8::1]:443'), { address: '2001:db8::1', port: 443, family: 6 });
  t.same(parseEndpoint('[::]:53'), { address: '::', port: 53, family: 6 });
  t.ok(Object.isFrozen(parseEndpoint('0.0.0.0:1')));
});

t.test('rejects what is not ADDR:PORT with an IP literal', async (t) => {
  for (const bad of ['192.0.2.1', '2001:db8::1:80', '[2001:db8::1]', 'example.com:80', '1.2.3:80',
    '192.0.2.1:0', '192.0.2.1:65536', '192.0.2.1:http', '', '[192.0.2.1]:80x']) {
    t.throws(() => parseEndpoint(bad, '--listen'), ConfigError, bad);
  }
  t.throws(() => parseEndpoint('2001:db8::1:80', '--backend'), /IPv6 in brackets/);
});

t.test('unmaps IPv4-mapped IPv6 addresses only', async (t) => {
  t.equal(unmapAddress('::ffff:192.0.2.7'), '192.0.2.7');
  t.equal(unmapAddress('192.0.2.7'), '192.0.2.7');
  t.equal(unmapAddress('2001:db8::7'), '2001:db8::7');
});

t.test('formats endpoints with brackets for IPv6', async (t) => {
  t.equal(formatEndpoint('192.0.2.1', 80), '192.0.2.1:80');
  t.equal(formatEndpoint('2001:db8::1', 80), '[2001:db8::1]:80');
});
