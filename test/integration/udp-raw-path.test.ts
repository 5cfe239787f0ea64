// The socketless UDP engine's kernel half (issue 15), proven alone before the
// engine is built on it: one raw socket sends from many client ports with the
// client's own address, an nftables tproxy rule steers the backend's replies
// onto one receive socket, and each reply arrives naming the client address
// and port it was for. The backend (a real UDP echo server) must see each
// client's address and port, and the fds must not grow with the sessions.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSeen, events } from './lab-fixture';
import { distFile } from '../../src/lab/topology';
import type { Topology } from '../../src/lab/topology';

const BACKEND_PORT = 5600;
const RECEIVE_PORT = 5699;
/** The mark relay routes apply delivers locally (its policy rule and local route). */
const RELAY_FWMARK = '0x5e1a';
/** What the raw socket marks its datagrams with (SO_MARK), for the conntrack rule. */
const RAW_MARK = '0x5e1b';

/**
 * Steering that names no backend: the raw socket marks what it sends, the
 * output hook copies the mark into the flow's conntrack entry, and a reply of
 * such a flow is sent to the receive socket by tproxy, with relay's fwmark so
 * its policy rule delivers it locally.
 */
function steerReplies(topo: Topology): void {
  const rules = `table inet rawpath {
  chain out {
    type filter hook output priority mangle; policy accept;
    meta mark ${RAW_MARK} ct mark set meta mark
  }
  chain pre {
    type filter hook prerouting priority mangle; policy accept;
    meta nfproto ipv4 meta l4proto udp ct direction reply ct mark ${RAW_MARK} tproxy ip to :${RECEIVE_PORT} meta mark set ${RELAY_FWMARK} accept
    meta nfproto ipv6 meta l4proto udp ct direction reply ct mark ${RAW_MARK} tproxy ip6 to :${RECEIVE_PORT} meta mark set ${RELAY_FWMARK} accept
  }
}`;
  const file = path.join(topo.lab.dir, 'raw-path.nft');
  fs.writeFileSync(file, rules);
  topo.relay.run('nft', '-f', file);
}

async function probe(topo: Topology, client: string, backend: string, receive: string, firstPort: number, ports: number) {
  const proc = topo.lab.spawn(topo.relay, [process.execPath, distFile('lab', 'raw-udp-probe.js'), '--client', client,
    '--backend', backend, '--receive', receive, '--first-port', String(firstPort), '--ports', String(ports), '--timeout', '5000', '--mark', String(Number(RAW_MARK))]);
  await proc.waitFor(/"event":"done"/, 15_000);
  return events(proc).find((e) => e.event === 'done') as Record<string, number>;
}

t.test('raw send, tproxy receive: the client address and port both ways, fds flat', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'rawp');
  const echo = await udpEcho(topo, BACKEND_PORT);
  steerReplies(topo);
  const cases = [
    { family: 'IPv4', client: ADDR.client4, backend: formatEndpoint(ADDR.backend4, BACKEND_PORT), receive: `0.0.0.0:${RECEIVE_PORT}` },
    { family: 'IPv6', client: ADDR.client6, backend: formatEndpoint(ADDR.backend6, BACKEND_PORT), receive: `[::]:${RECEIVE_PORT}` },
  ];
  let firstPort = 40_000;
  for (const c of cases) {
    const fdsOpen: number[] = [];
    for (const ports of [10, 1000]) {
      const seenBefore = udpSeen(echo).length;
      const done = await probe(topo, c.client, c.backend, c.receive, firstPort, ports);
      t.equal(done.sent, ports, `${c.family}, ${ports} client ports: every datagram sent`);
      t.equal(done.matched, ports, `${c.family}, ${ports} client ports: every reply came back to the port that sent, from the backend`);
      const seen = udpSeen(echo).slice(seenBefore);
      t.equal(seen.length, ports, `${c.family}: the backend got ${ports} datagrams`);
      t.ok(seen.every((d) => d.remote === c.client), `${c.family}: the backend saw the client's own address`);
      t.same(new Set(seen.map((d) => d.port)).size, ports, `${c.family}: and each client's own port`);
      t.equal(done.fdsEnd, done.fdsOpen, `${c.family}: no fd per session (${done.fdsOpen} open, ${done.fdsEnd} at the end)`);
      fdsOpen.push(done.fdsOpen);
      firstPort += ports;
    }
    t.equal(fdsOpen[0], fdsOpen[1], `${c.family}: the same fds for 10 sessions and 1,000`);
  }
});
