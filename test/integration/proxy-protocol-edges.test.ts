// PROXY protocol in, the edges: a header that arrives in pieces (v1 and v2,
// small writes with pauses) is still read, and the bytes after it reach the
// backend; a front that sends its header and then a FIN or a reset while
// relay still connects upstream leaves nothing behind; a reload that changes
// proxy-from applies to new connections and leaves established ones alone.
// Asserted on what the echo backend saw and on relay's fds.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import {
  tcpLab, relay, toolServer, accepts, canRunLab, SKIP_REASON, ADDR, formatEndpoint, eventually, relayLogs,
  type Topology, type SpawnedProcess,
} from './lab-fixture';
import { cliPath } from '../../src/lab/topology';
import { relayPid, fdCount, settleFds } from '../torture/harness';
import { writeProxyHeader } from '../../src/proxy-protocol';

/** Between two pieces of a header: long enough that each piece is a read of its own at relay. */
const PAUSE_MS = 150;

interface FrontScript {
  /** Written PAUSE_MS apart, Nagle off, so each goes as a segment of its own. */
  pieces: Buffer[];
  /** Sent from this address of the client namespace (default: its primary one). */
  local?: string;
  /** Written on SIGUSR2, then the end: the connection is held open until then. */
  onSignal?: Buffer;
  /** How the front ends after its pieces (or after onSignal): a FIN, or a reset. */
  finish: 'end' | 'reset';
}

/**
 * A scripted front in the client namespace. Prints {"event":"data","got":...}
 * with all it received so far at each read, and {"event":"closed","got":...}.
 */
function front(topo: Topology, target: string, script: FrontScript): SpawnedProcess {
  const cut = target.lastIndexOf(':');
  const code = `
const net = require('net');
const pieces = ${JSON.stringify(script.pieces.map((p) => p.toString('hex')))}.map((h) => Buffer.from(h, 'hex'));
const onSignal = ${script.onSignal ? `Buffer.from('${script.onSignal.toString('hex')}', 'hex')` : 'null'};
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const s = net.connect({ host: '${target.slice(0, cut)}', port: ${Number(target.slice(cut + 1))}, noDelay: true,
  ${script.local ? `localAddress: '${script.local}', ` : ''}allowHalfOpen: true });
let got = '';
const finish = () => { if (${JSON.stringify(script.finish)} === 'reset') s.resetAndDestroy(); else s.end(); };
s.on('data', (d) => { got += d; say({ event: 'data', got }); });
s.on('error', (e) => say({ event: 'error', code: e.code }));
s.on('close', () => { say({ event: 'closed', got }); process.exit(0); });
s.on('connect', async () => {
  for (const [i, p] of pieces.entries()) {
    if (i > 0) await new Promise((r) => setTimeout(r, ${PAUSE_MS}));
    s.write(p);
  }
  // 'sent' comes after the handler is set: a test may signal as soon as it reads it.
  if (onSignal) process.on('SIGUSR2', () => { s.write(onSignal); finish(); });
  say({ event: 'sent' });
  if (!onSignal) finish();
});
setTimeout(() => process.exit(1), 20000);
`;
  return topo.lab.spawn(topo.client, [process.execPath, '-e', code]);
}

/** What a front's script printed last with this event. */
function lastEvent(proc: SpawnedProcess, event: string): { got?: string; code?: string } | undefined {
  const lines = proc.stdout().split('\n').filter((l) => l.includes(`"event":"${event}"`));
  return lines.length > 0 ? JSON.parse(lines[lines.length - 1]) : undefined;
}

async function closedWith(proc: SpawnedProcess, timeoutMs = 8000): Promise<string> {
  return (await eventually(() => lastEvent(proc, 'closed'), timeoutMs, 'the front\'s close')).got ?? '';
}

/** buf cut at the given offsets: [0, a), [a, b), ..., [last, end). */
function cutAt(buf: Buffer, ...offsets: number[]): Buffer[] {
  return [0, ...offsets].map((start, i) => buf.subarray(start, offsets[i] ?? buf.length));
}

t.test('a header in pieces is read, and the bytes after it reach the backend', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppsp');
  const echo = await toolServer(topo, 'echo', 7600, [ADDR.backend4]);
  const proc = await relay(topo, ['--listen', '0.0.0.0:8600', '--proxy-protocol', 'any', '--proxy-from', `${ADDR.client4}/32`,
    '--keep-client-port', '--backend', formatEndpoint(ADDR.backend4, 7600)]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const target = formatEndpoint(ADDR.relayClientSide4, 8600);
  const to = { address: ADDR.relayClientSide4, port: 8600 };

  const v2 = writeProxyHeader('v2', 'stream', { address: '203.0.113.20', port: 40020 }, to);
  const v1 = writeProxyHeader('v1', 'stream', { address: '203.0.113.21', port: 40021 }, to);
  const cases = [
    // The signature cut, then the length field cut, the last piece the header's tail and the payload.
    { name: 'v2', pieces: cutAt(Buffer.concat([v2, Buffer.from('after v2\n')]), 5, 14, 15, v2.length - 3), payload: 'after v2\n' },
    // 'PRO' alone leaves any unable to tell v1 yet; the CRLF cut in two.
    { name: 'v1', pieces: cutAt(Buffer.concat([v1, Buffer.from('after v1\n')]), 3, 12, v1.length - 1), payload: 'after v1\n' },
  ];
  for (const c of cases) {
    const got = await closedWith(front(topo, target, { pieces: c.pieces, finish: 'end' }));
    t.equal(got, c.payload, `${c.name} in ${c.pieces.length} pieces: the bytes after the header reached the backend and came back`);
  }
  t.same(accepts(echo).map((a) => `${a.remote}:${a.port}`), ['203.0.113.20:40020', '203.0.113.21:40021'],
    'the backend saw the clients the split headers named');
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back");
  await proc.stop('SIGTERM');
  t.match(relayLogs(proc, 'relay stopped')[0], { tcp: { proxyHeaders: 2, proxyRefused: 0 } });
});

t.test('a front that ends or resets while relay still connects upstream leaves nothing behind', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppfn');
  // The backend drops SYNs to this port: relay's upstream connect hangs until connect-timeout.
  topo.backend.run('nft', 'add', 'table', 'inet', 'ppfn');
  topo.backend.run('nft', 'add', 'chain', 'inet', 'ppfn', 'in', '{ type filter hook input priority 0 ; }');
  topo.backend.run('nft', 'add', 'rule', 'inet', 'ppfn', 'in', 'tcp', 'dport', '7610', 'drop');
  const proc = await relay(topo, ['--listen', '0.0.0.0:8610', '--proxy-protocol', 'v2', '--proxy-from', `${ADDR.client4}/32`,
    '--connect-timeout', '2s', '--backend', formatEndpoint(ADDR.backend4, 7610)]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const target = formatEndpoint(ADDR.relayClientSide4, 8610);
  const header = writeProxyHeader('v2', 'stream', { address: '203.0.113.30', port: 40030 }, { address: ADDR.relayClientSide4, port: 8610 });

  // Each front is started once relay holds the one before it with its upstream
  // socket (2 fds a connection): the header was read and relay is connecting.
  const startedAt = Date.now();
  const fin = front(topo, target, { pieces: [Buffer.concat([header, Buffer.from('lost\n')])], finish: 'end' });
  await eventually(() => fdCount(pid) >= fdsBefore + 2, 5000, 'relay connecting for the FIN front');
  const rst = front(topo, target, { pieces: [header], onSignal: Buffer.from('x'), finish: 'reset' });
  await eventually(() => fdCount(pid) >= fdsBefore + 4, 5000, 'relay connecting for the second front');
  // Its SIGUSR2 handler is set when it says it sent: a signal before that would kill it
  // (an fd relay opens for a moment can meet the count above before the front's script gets there).
  await eventually(() => lastEvent(rst, 'sent'), 5000, 'the second front sent its header');
  rst.child.kill('SIGUSR2');
  await eventually(() => lastEvent(rst, 'closed'), 5000, 'the second front reset');
  t.ok(Date.now() - startedAt < 2000, 'both fronts ended before relay\'s connect-timeout');
  t.equal(await settleFds(pid, fdsBefore, 0, 10_000), fdsBefore, `relay's fds are back after ${Date.now() - startedAt} ms`);
  t.equal(await closedWith(fin), '', 'the FIN front got nothing back');
  await proc.stop('SIGTERM');
  t.match(relayLogs(proc, 'relay stopped')[0], { tcp: { proxyHeaders: 2 } }, 'both headers were read');
});

t.test('a reload that changes proxy-from applies to new connections only', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'pprl');
  const secondFront = '192.0.2.3';
  topo.client.ip('addr', 'add', `${secondFront}/24`, 'dev', 'eth0');
  const echo = await toolServer(topo, 'echo', 7620, [ADDR.backend4]);
  const file = path.join(topo.lab.dir, 'relay.toml');
  const config = (from: string) => `log-level = "info"
pid-file = "${path.join(topo.lab.dir, 'relay.pid')}"

[[service]]
name = "behind-lb"
proto = "tcp"
listen = ["${ADDR.relayClientSide4}:8620"]
backend = ["${ADDR.backend4}:7620"]
health-interval = "0s"
proxy-protocol = "v2"
proxy-from = ["${from}/32"]
`;
  fs.writeFileSync(file, config(ADDR.client4));
  const proc = topo.lab.spawn(topo.relay, [process.execPath, cliPath(), '--config', file]);
  await proc.waitFor(/"msg":"relay started"/, 10_000);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const target = formatEndpoint(ADDR.relayClientSide4, 8620);
  const header = (n: number) => writeProxyHeader('v2', 'stream', { address: `203.0.113.${n}`, port: 40000 + n },
    { address: ADDR.relayClientSide4, port: 8620 });
  const payloadAfter = (n: number, text: string) => [Buffer.concat([header(n), Buffer.from(text)])];

  const held = front(topo, target, { pieces: payloadAfter(40, 'before\n'), onSignal: Buffer.from('after\n'), finish: 'end' });
  await eventually(() => lastEvent(held, 'data')?.got === 'before\n', 5000, 'the held connection echoed');

  fs.writeFileSync(file, config(secondFront));
  process.kill(pid, 'SIGHUP');
  await eventually(() => relayLogs(proc, 'configuration reloaded')[0], 5000, 'the reload');

  const oldFront = await closedWith(front(topo, target, { pieces: payloadAfter(41, 'old front\n'), finish: 'end' }));
  t.equal(oldFront, '', 'a new connection from the front no longer trusted gets nothing through');
  const newFront = await closedWith(front(topo, target, { pieces: payloadAfter(42, 'new front\n'), local: secondFront, finish: 'end' }));
  t.equal(newFront, 'new front\n', 'a new connection from the newly trusted front is served');

  held.child.kill('SIGUSR2');
  t.equal(await closedWith(held), 'before\nafter\n', 'the connection established before the reload kept moving bytes to the end');
  t.same(accepts(echo).map((a) => a.remote), ['203.0.113.40', '203.0.113.42'],
    'the backend saw the held client and the new front\'s client, nothing from the untrusted front');
  await eventually(() => relayLogs(proc, 'connection from outside proxy-from: closing (a PROXY header is trusted from those fronts only)')
    .find((l) => String(l.front).startsWith(`${ADDR.client4}:`)), 3000, "relay's line for the front no longer trusted");
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back");
  await proc.stop('SIGTERM');
  t.match(relayLogs(proc, 'relay stopped')[0], { services: { 'behind-lb': { tcp: { proxyHeaders: 2, proxyUntrusted: 1 } } } });
});
