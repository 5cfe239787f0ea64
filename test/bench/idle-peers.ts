// The two ends of the idle-connection case, each run as its own process in a
// namespace (`node idle-peers.js serve|hold --flags`):
//   serve  accept and hold every connection, never reply; report how many are
//          open and which client addresses the backend saw. On SIGUSR2, close
//          them all (FIN): the backend closing first leaves TIME_WAIT in the
//          backend namespace, not in the proxy's, where 5,000 upstream tuples
//          a run would soon use up the proxy's ports toward this backend.
//   hold   open N connections to a target, at most P connecting at a time
//          (so the proxy's accept backlog never overflows), then hold them
// Both print JSON lines; `status` lines come at most every 100 ms, and only
// when something changed, so 5,000 connections cost a few lines, not 5,000.
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const STATUS_EVERY_MS = 100;

function print(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Calls report() at most every STATUS_EVERY_MS after changed() is called. */
function throttled(report: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  return () => {
    timer ??= setTimeout(() => { timer = undefined; report(); }, STATUS_EVERY_MS);
  };
}

function splitHostPort(spec: string): { host: string; port: number } {
  const cut = spec.lastIndexOf(':');
  return { host: spec.slice(0, cut).replace(/^\[|\]$/g, ''), port: Number(spec.slice(cut + 1)) };
}

function serve(listen: string): void {
  const { host, port } = splitHostPort(listen);
  const remotes: Record<string, number> = {};
  let accepted = 0;
  let open = 0;
  const sockets = new Set<net.Socket>();
  const changed = throttled(() => print({ event: 'status', accepted, open, remotes }));
  process.on('SIGUSR2', () => sockets.forEach((s) => s.end()));
  const server = net.createServer((socket) => {
    accepted++;
    open++;
    sockets.add(socket);
    const remote = socket.remoteAddress ?? '?';
    remotes[remote] = (remotes[remote] ?? 0) + 1;
    socket.resume(); // discard anything sent, so a client can never block on us
    socket.on('error', () => socket.destroy());
    socket.on('close', () => { open--; sockets.delete(socket); changed(); });
    changed();
  });
  server.listen({ host, port, backlog: 4096 }, () => print({ event: 'listening', host, port }));
}

async function hold(target: string, conns: number, parallel: number, timeoutMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  const errors: Record<string, number> = {};
  let open = 0;
  let closed = 0;
  const changed = throttled(() => print({ event: 'status', open, closed }));
  const connectOne = () => new Promise<void>((resolve) => {
    let connected = false;
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => socket.destroy(new Error('connect timeout')), timeoutMs);
    socket.once('connect', () => { clearTimeout(timer); connected = true; open++; resolve(); });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const key = err.code ?? err.message;
      errors[key] = (errors[key] ?? 0) + 1;
    });
    socket.once('close', () => {
      clearTimeout(timer);
      if (!connected) return resolve(); // failed: counted by its error
      open--; // a held connection ended: the proxy or the backend closed it
      closed++;
      changed();
    });
  });
  let next = 0;
  const worker = async () => {
    while (next < conns) {
      next++;
      await connectOne();
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, conns) }, worker));
  print({ event: 'held', open, closed, failed: conns - open - closed, errors });
}

function main(): void {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      listen: { type: 'string' },
      target: { type: 'string' },
      conns: { type: 'string', default: '1' },
      parallel: { type: 'string', default: '200' },
      timeout: { type: 'string', default: '10000' },
    },
  });
  if (mode === 'serve' && values.listen) return serve(values.listen);
  if (mode === 'hold' && values.target) {
    void hold(values.target, Number(values.conns), Number(values.parallel), Number(values.timeout));
    return;
  }
  process.stderr.write('usage: idle-peers.js serve --listen ADDR:PORT | hold --target ADDR:PORT --conns N [--parallel P]\n');
  process.exit(2);
}

main();
