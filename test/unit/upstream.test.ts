// The shared upstream opener's family decision, with --map-ipv4-prefix: pure,
// with fake sockets that record what they were asked to bind.
import t from 'tap';
import { openUpstream, UpstreamOutcomes, UpstreamSockets } from '../../protocols/upstream';
import { parseEndpoint } from '../../src/addr';
import { parseMapPrefix } from '../../src/map-prefix';
import { SysError } from '../../src/errors';

interface Fake { bound?: [string, number]; unbound?: number }

function sockets(options: Partial<UpstreamSockets<Fake>> = {}, busy = new Set<string>()): UpstreamSockets<Fake> {
  return {
    onFamilyMismatch: 'reject',
    bindFrom: (address, port) => {
      if (busy.has(`${address}:${port}`)) throw new SysError({ syscall: 'bind', errno: 98, address, port });
      return { bound: [address, port] };
    },
    unbound: (family) => ({ unbound: family }),
    ...options,
  };
}

function recorder(): UpstreamOutcomes & { seen: string[] } {
  const seen: string[] = [];
  return {
    seen,
    rejectedMismatch: () => seen.push('rejected'),
    masqueraded: () => seen.push('masqueraded'),
    mapped: (source) => seen.push(`mapped ${source}`),
    portInUse: (port) => seen.push(`port in use ${port}`),
    failed: (err) => seen.push(`failed ${String(err)}`),
  };
}

const prefix = parseMapPrefix('2001:db8:64::/96');
const v6Backend = parseEndpoint('[2001:db8:51::20]:80');
const v4Backend = parseEndpoint('198.51.100.20:80');
const v4Client = { address: '192.0.2.2', port: 40000 };
const v6Client = { address: '2001:db8:2::2', port: 40000 };

t.test('an IPv4 client of an IPv6 backend is bound to PREFIX + its address, whatever the policy', async (t) => {
  for (const policy of ['reject', 'masquerade'] as const) {
    const out = recorder();
    const upstream = openUpstream(sockets({ onFamilyMismatch: policy, mapIpv4Prefix: prefix }), out, v4Client, v6Backend);
    t.same(upstream, { bound: ['2001:db8:64::c000:202', 40000] }, policy);
    t.same(out.seen, ['mapped 2001:db8:64::c000:202'], policy);
  }
});

t.test('the port falls back, the mapped address stays', async (t) => {
  const out = recorder();
  const upstream = openUpstream(sockets({ mapIpv4Prefix: prefix }, new Set(['2001:db8:64::c000:202:40000'])), out, v4Client, v6Backend);
  t.same(upstream, { bound: ['2001:db8:64::c000:202', 0] });
  t.same(out.seen, ['mapped 2001:db8:64::c000:202', 'port in use 40000']);
});

t.test('without a prefix, and for IPv6 clients, nothing changes', async (t) => {
  const rejected = recorder();
  t.equal(openUpstream(sockets(), rejected, v4Client, v6Backend), undefined);
  t.same(rejected.seen, ['rejected']);
  const masqueraded = recorder();
  t.same(openUpstream(sockets({ onFamilyMismatch: 'masquerade' }), masqueraded, v4Client, v6Backend), { unbound: 6 });
  const v6ToV4 = recorder();
  t.equal(openUpstream(sockets({ mapIpv4Prefix: prefix }), v6ToV4, v6Client, v4Backend), undefined, 'an IPv6 client of an IPv4 backend: the policy');
  t.same(v6ToV4.seen, ['rejected']);
  const same = recorder();
  t.same(openUpstream(sockets({ mapIpv4Prefix: prefix }), same, v4Client, v4Backend), { bound: ['192.0.2.2', 40000] });
  t.same(same.seen, [], 'same family: the client\'s own address, not mapped');
});
