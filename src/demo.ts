// `relay demo`: a namespace lab (client, relay, backend) that shows, for TCP
// and UDP over IPv4 and IPv6, the address the backend saw through relay,
// beside (for TCP) the one it sees through a plain proxy. Everything it makes
// is removed on exit, Ctrl-C or failure.
import { ADDR, buildTopology, applyRelayRoutes, startRelay } from './lab/topology';
import { Lab, Namespace, SpawnedProcess, waitForListener } from './lab/netns';
import { startToolServer, toolsPath, udpToolsPath, events } from './lab/peers';
import { formatEndpoint } from './addr';
import { RelayError } from './errors';

const RELAY_PORT = 8080;
const PLAIN_PORT = 8081;
const BACKEND_PORT = 7000;

interface Row {
  path: string;
  clientFrom: string;
  backendSaw: string;
  verdict: string;
}

export async function runDemo(): Promise<number> {
  if (process.getuid?.() !== 0) {
    throw new RelayError('ERR_PRIVILEGE', 'the demo needs root: it creates network namespaces',
      'run: sudo npx relay demo');
  }
  const lab = new Lab(`relaydemo${process.pid}`);
  const cleanup = () => {
    void lab.teardown().then(() => process.exit(130));
  };
  process.once('SIGINT', cleanup);
  process.once('SIGTERM', cleanup);
  try {
    const rows = await demoTcpAndUdp(lab);
    printRows(rows);
    return rows.every((r) => r.verdict !== 'FAIL') ? 0 : 1;
  } finally {
    await lab.teardown();
    process.removeListener('SIGINT', cleanup);
    process.removeListener('SIGTERM', cleanup);
  }
}

async function demoTcpAndUdp(lab: Lab): Promise<Row[]> {
  say('building the lab: namespaces client, relay, backend (forwarding off on the relay)');
  const topo = buildTopology(lab);
  say('relay routes apply (inside the relay namespace):');
  process.stdout.write(indent(applyRelayRoutes(topo.relay)));

  const backend = await startToolServer(lab, topo.backend, 'echo',
    [formatEndpoint(ADDR.backend4, BACKEND_PORT), formatEndpoint(ADDR.backend6, BACKEND_PORT)], BACKEND_PORT);
  const udpBackend = lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo',
    '--listen', formatEndpoint(ADDR.backend4, BACKEND_PORT), '--listen', formatEndpoint(ADDR.backend6, BACKEND_PORT)]);
  await waitForListener(topo.backend, 'udp', BACKEND_PORT);
  // One listener on [::] takes IPv4 clients too; each client goes to the backend of its own family.
  await startRelay(lab, topo.relay, [
    '--proto', 'tcp,udp', '--listen', formatEndpoint('::', RELAY_PORT),
    '--backend', formatEndpoint(ADDR.backend4, BACKEND_PORT), '--backend', formatEndpoint(ADDR.backend6, BACKEND_PORT),
  ]);
  startPlainProxies(lab, topo.relay);

  const cases = [
    { path: 'TCP4 through relay', target: formatEndpoint(ADDR.relayClientSide4, RELAY_PORT), from: ADDR.client4, transparent: true },
    { path: 'TCP4 plain proxy', target: formatEndpoint(ADDR.relayClientSide4, PLAIN_PORT), from: ADDR.client4, transparent: false },
    { path: 'TCP6 through relay', target: formatEndpoint(ADDR.relayClientSide6, RELAY_PORT), from: ADDR.client6, transparent: true },
    { path: 'TCP6 plain proxy', target: formatEndpoint(ADDR.relayClientSide6, PLAIN_PORT), from: ADDR.client6, transparent: false },
  ];
  const rows: Row[] = [];
  for (const c of cases) {
    const before = accepted(backend).length;
    const reply = await clientHello(lab, topo.client, c.target);
    const saw = accepted(backend).slice(before)[0] ?? '(nothing)';
    const verdict = !reply ? 'FAIL' : c.transparent ? (saw === c.from ? "OK: the client's own address" : 'FAIL')
      : "the proxy's address: what a plain proxy shows";
    rows.push({ path: c.path, clientFrom: c.from, backendSaw: saw, verdict });
  }
  for (const [path, relayAddress, from] of [
    ['UDP4 through relay', ADDR.relayClientSide4, ADDR.client4],
    ['UDP6 through relay', ADDR.relayClientSide6, ADDR.client6],
  ] as const) {
    rows.push(await udpRow(lab, topo.client, udpBackend, path, formatEndpoint(relayAddress, RELAY_PORT), from));
  }
  return rows;
}

/** UDP keeps the client's port too: send from a known port, compare with what the backend saw. */
async function udpRow(lab: Lab, ns: Namespace, backend: SpawnedProcess, path: string, target: string, from: string): Promise<Row> {
  const port = 40053;
  const client = lab.spawn(ns, [process.execPath, udpToolsPath(), 'send', '--target', target,
    '--local-port', String(port), '--timeout', '3000']);
  const result = await client.waitFor(/"event":"send-result".*/, 6000).catch(() => '');
  const replied = result.includes('"bytes"');
  const seen = events(backend).filter((e) => e.event === 'udp').at(-1);
  const saw = seen ? formatEndpoint(String(seen.remote), Number(seen.port)) : '(nothing)';
  const sent = formatEndpoint(from, port);
  const verdict = replied && saw === sent ? "OK: the client's own address and port" : 'FAIL';
  return { path, clientFrom: sent, backendSaw: saw, verdict };
}

function startPlainProxies(lab: Lab, relayNs: ReturnType<typeof buildTopology>['relay']): void {
  lab.spawn(relayNs, [process.execPath, toolsPath(), 'forward',
    '--listen', formatEndpoint(ADDR.relayClientSide4, PLAIN_PORT), '--target', formatEndpoint(ADDR.backend4, BACKEND_PORT)]);
  lab.spawn(relayNs, [process.execPath, toolsPath(), 'forward',
    '--listen', formatEndpoint(ADDR.relayClientSide6, PLAIN_PORT), '--target', formatEndpoint(ADDR.backend6, BACKEND_PORT)]);
}

function accepted(backend: Parameters<typeof events>[0]): string[] {
  return events(backend).filter((e) => e.event === 'accept').map((e) => String(e.remote));
}

async function clientHello(lab: Lab, ns: ReturnType<typeof buildTopology>['client'], target: string): Promise<boolean> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const proc = lab.spawn(ns, [process.execPath, toolsPath(), 'hello', '--target', target, '--timeout', '3000']);
    const line = await proc.waitFor(/\{"event":"(reply|error)".*\}/, 5000).catch(() => '');
    if (line.includes('"reply"')) return true;
    await new Promise((r) => setTimeout(r, 100)); // a plain proxy may still be starting
  }
  return false;
}

function printRows(rows: Row[]): void {
  const header = { path: 'path', clientFrom: 'client sent from', backendSaw: 'backend saw', verdict: '' };
  const widths = { path: 20, clientFrom: 22, backendSaw: 22 };
  process.stdout.write('\n');
  for (const r of [header, ...rows]) {
    process.stdout.write(`  ${r.path.padEnd(widths.path)} ${r.clientFrom.padEnd(widths.clientFrom)} ` +
      `${r.backendSaw.padEnd(widths.backendSaw)} ${r.verdict}\n`);
  }
  process.stdout.write('\n');
}

function say(line: string): void {
  process.stdout.write(`relay demo: ${line}\n`);
}

function indent(text: string): string {
  return text.split('\n').filter(Boolean).map((l) => `    ${l}\n`).join('');
}
