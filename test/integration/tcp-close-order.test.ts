// A backend that replies and closes (HTTP with Connection: close) closes first
// through relay too, as through a router: when the backend's reply and FIN
// reach relay together, they reach the client in one segment, so the client
// closes second and holds no TIME_WAIT. (The backend sends both in one segment
// itself, so the test does not depend on how fast relay reads: with a FIN a
// moment behind the reply, relay passes it on at once, in its own segment.)
// A FIN in a segment of its own, even microseconds after the reply, lets a
// fast client close first and keep the TIME_WAIT, which under the kernel's
// default tcp_tw_reuse fills its port range (issue 21). Counted by nftables in
// the client's namespace, on what the client's kernel received.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { tcpLab, relay, toolServer, accepts, canRunLab, SKIP_REASON, ADDR, formatEndpoint, eventually } from './lab-fixture';
import { relayPid, fdCount, settleFds } from '../torture/harness';

const REQUESTS = 20;
const PORT = 8090;

t.test('the reply and the backend FIN reach the client in one segment', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'cor');
  const backend = await toolServer(topo, 'reply-fin', 80);
  const proc = await relay(topo, ['--listen', `0.0.0.0:${PORT}`, '--listen', `[::]:${PORT + 1}`,
    '--backend', formatEndpoint(ADDR.backend4, 80), '--backend', formatEndpoint(ADDR.backend6, 80)]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  // The reply (status line, headers, body) is over 150 bytes: a FIN segment
  // longer than its headers (at most 60 + 60 bytes) carries it.
  const ruleset = path.join(topo.lab.dir, 'close-order.nft');
  fs.writeFileSync(ruleset, `
table inet close_order {
  counter fin4 {}
  counter fin4_with_reply {}
  counter fin6 {}
  counter fin6_with_reply {}
  chain input {
    type filter hook input priority 0;
    ip saddr ${ADDR.relayClientSide4} tcp sport ${PORT} tcp flags & fin == fin counter name fin4
    ip saddr ${ADDR.relayClientSide4} tcp sport ${PORT} tcp flags & fin == fin ip length > 120 counter name fin4_with_reply
    ip6 saddr ${ADDR.relayClientSide6} tcp sport ${PORT + 1} tcp flags & fin == fin counter name fin6
    ip6 saddr ${ADDR.relayClientSide6} tcp sport ${PORT + 1} tcp flags & fin == fin ip6 length > 100 counter name fin6_with_reply
  }
}`);
  topo.client.run('nft', '-f', ruleset);
  const counters = () => {
    const listed = JSON.parse(topo.client.run('nft', '-j', 'list', 'counters', 'table', 'inet', 'close_order')) as
      { nftables: { counter?: { name: string; packets: number } }[] };
    return Object.fromEntries(listed.nftables.flatMap((e) => (e.counter ? [[e.counter.name, e.counter.packets]] : [])));
  };

  const urls = { 4: `http://${ADDR.relayClientSide4}:${PORT}/v4`, 6: `http://[${ADDR.relayClientSide6}]:${PORT + 1}/v6` };
  for (const family of [4, 6] as const) {
    for (let i = 0; i < REQUESTS; i++) {
      const body = topo.client.run('curl', '-sS', '--max-time', '5', '-H', 'Connection: close', urls[family]);
      t.equal(body, 'hello from the backend\n', `IPv${family} request ${i + 1}: the client got the reply`);
    }
  }
  const seen = counters();
  t.equal(seen.fin4, REQUESTS, 'IPv4: one FIN from relay per connection');
  t.equal(seen.fin4_with_reply, REQUESTS, 'IPv4: every FIN came in the segment that carried the reply');
  t.equal(seen.fin6, REQUESTS, 'IPv6: one FIN from relay per connection');
  t.equal(seen.fin6_with_reply, REQUESTS, 'IPv6: every FIN came in the segment that carried the reply');
  const timeWait = topo.client.run('ss', '-tanH', 'state', 'time-wait').split('\n').filter(Boolean);
  t.same(timeWait, [], 'the client closed second: it holds no TIME_WAIT');
  const accepted = await eventually(() => (accepts(backend).length >= 2 * REQUESTS ? accepts(backend) : undefined), 5000, 'every accept');
  t.same([...new Set(accepted.map((a) => a.remote))].sort(), [ADDR.client4, ADDR.client6].sort(),
    "the backend saw the client's own address, over IPv4 and IPv6");
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back where they were");
});
