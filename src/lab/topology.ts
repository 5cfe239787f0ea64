// The standard lab: client -- relay -- backend, IPv4 and IPv6, documentation
// addresses. Forwarding stays off on the relay, so the only way from client to
// backend is through relay itself. The backend routes replies for clients via
// the relay (the "relay as gateway" recipe).
import * as path from 'node:path';
import { Lab, Namespace, SpawnedProcess } from './netns';

export const ADDR = {
  client4: '192.0.2.2',
  relayClientSide4: '192.0.2.1',
  relayBackendSide4: '198.51.100.1',
  backend4: '198.51.100.20',
  client6: '2001:db8:2::2',
  relayClientSide6: '2001:db8:2::1',
  relayBackendSide6: '2001:db8:51::1',
  backend6: '2001:db8:51::20',
} as const;

export interface Topology {
  lab: Lab;
  client: Namespace;
  relay: Namespace;
  backend: Namespace;
}

export function buildTopology(lab: Lab): Topology {
  const client = lab.addNamespace('client');
  const relay = lab.addNamespace('relay');
  const backend = lab.addNamespace('backend');
  lab.link(client, 'eth0', relay, 'eth-client');
  lab.link(relay, 'eth-backend', backend, 'eth0');

  addAddress(client, 'eth0', `${ADDR.client4}/24`, `${ADDR.client6}/64`);
  addAddress(relay, 'eth-client', `${ADDR.relayClientSide4}/24`, `${ADDR.relayClientSide6}/64`);
  addAddress(relay, 'eth-backend', `${ADDR.relayBackendSide4}/24`, `${ADDR.relayBackendSide6}/64`);
  addAddress(backend, 'eth0', `${ADDR.backend4}/24`, `${ADDR.backend6}/64`);

  client.ip('route', 'add', 'default', 'via', ADDR.relayClientSide4);
  client.ip('-6', 'route', 'add', 'default', 'via', ADDR.relayClientSide6);
  backend.ip('route', 'add', 'default', 'via', ADDR.relayBackendSide4);
  backend.ip('-6', 'route', 'add', 'default', 'via', ADDR.relayBackendSide6);
  return { lab, client, relay, backend };
}

function addAddress(ns: Namespace, dev: string, v4: string, v6: string): void {
  ns.ip('addr', 'add', v4, 'dev', dev);
  // nodad: usable at once, not after duplicate address detection's delay.
  ns.ip('-6', 'addr', 'add', v6, 'dev', dev, 'nodad');
}

/**
 * A compiled file under dist/src, whether we run from dist/ (demo, bench) or
 * from the .ts sources (tests): processes in namespaces always run compiled JS.
 */
export function distFile(...parts: string[]): string {
  const srcRoot = path.resolve(__dirname, '..');
  const root = srcRoot.split(path.sep).includes('dist') ? srcRoot : path.resolve(srcRoot, '..', 'dist', 'src');
  return path.join(root, ...parts);
}

export function cliPath(): string {
  return distFile('cli.js');
}

/** `relay routes apply` inside ns: the same command an operator runs. */
export function applyRelayRoutes(ns: Namespace, ...flags: string[]): string {
  return ns.run(process.execPath, cliPath(), 'routes', 'apply', ...flags);
}

/** Start relay inside ns and wait until it listens on every --listen port and, at info level, has logged its start line. */
export async function startRelay(lab: Lab, ns: Namespace, args: string[], timeoutMs = 10_000): Promise<SpawnedProcess> {
  const proc = lab.spawn(ns, [process.execPath, cliPath(), ...args]);
  await waitUntilRelayServes(proc, ns, args, timeoutMs);
  return proc;
}

/**
 * Wait until relay run with args listens on every --listen port and, at info
 * level, has logged its start line; kill it and throw what it said if it exits
 * or the time runs out first.
 */
export async function waitUntilRelayServes(proc: SpawnedProcess, ns: Namespace, args: string[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const waitFor = async (ready: () => boolean, what: string) => {
    while (!ready()) {
      if (proc.child.exitCode !== null || Date.now() > deadline) {
        await proc.stop('SIGKILL');
        await new Promise((r) => setTimeout(r, 100)); // what it wrote before exiting is still in the pipes
        throw new Error(`relay did not ${what}: ${proc.stderr().trim() || proc.stdout().trim()}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const ports = args.flatMap((arg, i) => (args[i - 1] === '--listen' ? [Number(arg.slice(arg.lastIndexOf(':') + 1))] : []));
  const protos = (args.includes('--proto') ? args[args.indexOf('--proto') + 1] : 'tcp').split(',');
  for (const port of ports) {
    for (const proto of protos) {
      const flags = proto === 'udp' ? '-Hlun' : '-Hltn';
      await waitFor(() => ns.tryRun('ss', flags, `sport = :${port}`).stdout.trim() !== '', `start listening on ${proto}/${port}`);
    }
  }
  // One socket seen is not all of them: a wildcard UDP listener binds each
  // address in turn, and a caller that counts relay's fds now would count half
  // a start. The start line comes once every listener is bound.
  if (logsStartLine(args)) await waitFor(() => /"msg":"(relay|worker) started"/.test(proc.stdout()), 'log its start line');
}

/** Whether relay run with args prints its start line (info level; a config file sets its own level). */
function logsStartLine(args: string[]): boolean {
  if (args.includes('--config')) return false;
  const level = args[args.lastIndexOf('--log-level') + 1];
  return !args.includes('--log-level') || level === 'info' || level === 'debug' || level === 'trace';
}
