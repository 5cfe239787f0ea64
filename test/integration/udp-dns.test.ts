// DNS through relay, to a real dnsmasq that logs each query's source: dig
// gets its answer over UDP and TCP, IPv4 and IPv6, and dnsmasq saw the client.
import t from 'tap';
import * as path from 'node:path';
import { tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, eventually } from './lab-fixture';
import { waitForListener } from '../../src/lab/netns';

t.test('dig through relay to dnsmasq', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'dns');
  const dnsmasq = topo.lab.spawn(topo.backend, ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null',
    '--no-resolv', '--no-hosts', '--bind-interfaces', `--listen-address=${ADDR.backend4}`,
    `--listen-address=${ADDR.backend6}`, '--except-interface=lo', '--port=53', '--log-queries', '--log-facility=-',
    '--user=root', `--pid-file=${path.join(topo.lab.dir, 'dnsmasq.pid')}`, '--address=/relay.test/203.0.113.7',
    '--address=/relay.test/2001:db8:77::7']);
  await waitForListener(topo.backend, 'udp', 53);
  // One relay for DNS over UDP and TCP on the same listeners.
  await relay(topo, ['--proto', 'tcp,udp', '--listen', '0.0.0.0:53', '--listen', '[::]:5353',
    '--backend', formatEndpoint(ADDR.backend4, 53), '--backend', formatEndpoint(ADDR.backend6, 53), '--udp-responses', '1']);

  const cases = [
    { name: 'UDP4', server: ADDR.relayClientSide4, port: 53, tcp: false, qtype: 'A', answer: '203.0.113.7', from: ADDR.client4 },
    { name: 'TCP4', server: ADDR.relayClientSide4, port: 53, tcp: true, qtype: 'A', answer: '203.0.113.7', from: ADDR.client4 },
    { name: 'UDP6', server: ADDR.relayClientSide6, port: 5353, tcp: false, qtype: 'AAAA', answer: '2001:db8:77::7', from: ADDR.client6 },
    { name: 'TCP6', server: ADDR.relayClientSide6, port: 5353, tcp: true, qtype: 'AAAA', answer: '2001:db8:77::7', from: ADDR.client6 },
  ];
  for (const c of cases) {
    const name = `${c.name.toLowerCase()}.relay.test`;
    const out = topo.client.run('dig', `@${c.server}`, '-p', String(c.port), name, c.qtype, '+short',
      '+time=2', '+tries=1', ...(c.tcp ? ['+tcp'] : []));
    t.equal(out.trim(), c.answer, `${c.name}: dig got the answer`);
    const line = await eventually(() => dnsmasq.stderr().split('\n').find((l) => l.includes(`query[${c.qtype}] ${name} from`)),
      3000, `${name} in dnsmasq's log`);
    t.match(line, new RegExp(`from ${c.from.replace(/\./g, '\\.')}$`), `${c.name}: dnsmasq logged the client's address`);
  }
});
