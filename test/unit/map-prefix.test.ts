import t from 'tap';
import { parseMapPrefix, mapIpv4, unmapIpv4, isWellKnownPrefix } from '../../src/map-prefix';
import { ConfigError } from '../../src/errors';

t.test("RFC 6052 section 2.4's examples: 192.0.2.33 in each prefix length", async (t) => {
  const examples: [string, string][] = [
    ['2001:db8::/32', '2001:db8:c000:221::'],
    ['2001:db8:100::/40', '2001:db8:1c0:2:21::'],
    ['2001:db8:122::/48', '2001:db8:122:c000:2:2100::'],
    ['2001:db8:122:300::/56', '2001:db8:122:3c0:0:221::'],
    ['2001:db8:122:344::/64', '2001:db8:122:344:c0:2:2100:0'],
    ['2001:db8:122:344::/96', '2001:db8:122:344::c000:221'],
    ['64:ff9b::/96', '64:ff9b::c000:221'],
  ];
  for (const [prefix, mapped] of examples) {
    const parsed = parseMapPrefix(prefix);
    t.equal(mapIpv4(parsed, '192.0.2.33'), mapped, prefix);
    t.equal(unmapIpv4(parsed, mapped), '192.0.2.33', `${prefix}: back to IPv4`);
  }
});

t.test('the prefix is canonical; only addresses inside it unmap', async (t) => {
  const prefix = parseMapPrefix('2001:DB8:64:0::/96');
  t.equal(prefix.text, '2001:db8:64::/96');
  t.equal(mapIpv4(prefix, '192.0.2.2'), '2001:db8:64::c000:202');
  t.equal(unmapIpv4(prefix, '2001:db8:65::c000:202'), undefined);
  t.equal(unmapIpv4(prefix, '192.0.2.2'), undefined);
});

t.test('only the well-known prefix is the well-known prefix', async (t) => {
  t.ok(isWellKnownPrefix(parseMapPrefix('64:ff9b::/96')));
  t.notOk(isWellKnownPrefix(parseMapPrefix('64:ff9b:1::/48')));
  t.notOk(isWellKnownPrefix(parseMapPrefix('2001:db8:64::/96')));
});

t.test('refuses what is not an RFC 6052 prefix, in one line', async (t) => {
  const cases: [string, RegExp][] = [
    ['2001:db8:64::/80', /^--map-ipv4-prefix 2001:db8:64::\/80: the length must be \/96 or another of RFC 6052's \(\/32, \/40, \/48, \/56, \/64, \/96\): got \/80$/],
    ['2001:db8:64::/128', /got \/128$/],
    ['2001:db8:64::', /must be an IPv6 prefix such as 2001:db8:64::\/96: got '2001:db8:64::'$/],
    ['192.0.2.0/24', /must be an IPv6 prefix/],
    ['fe80::%eth0/96', /must be an IPv6 prefix/],
    ['::ffff:0:0/96', /is in the ipv4Mapped range/],
    ['ff02::/96', /is in the multicast range/],
    ['2001:db8:64::1/96', /has bits set past \/96: write 2001:db8:64::\/96$/],
    ['2001:db8:64:ff::/56', /has bits set past \/56: write 2001:db8:64::\/56$/],
  ];
  for (const [text, message] of cases) {
    t.throws(() => parseMapPrefix(text), ConfigError, text);
    t.throws(() => parseMapPrefix(text), { message }, text);
  }
});
