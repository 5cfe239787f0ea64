// Abusive peers for the torture tests and the soak: clients and backends that
// misbehave on purpose (FIN then RST, RST at once, RST mid-transfer, slow and
// never-reading peers), UDP floods from many ports and from many source
// addresses. One process each inside a namespace (`node abuse.js MODE
// --flags`), reporting on stdout one JSON object a line, like tools.ts.
//
// Every loop here is bounded: a connection gives up after --timeout, a run
// after its count, so a relay that misbehaves fails a test instead of hanging it.
//
// Backend (what it does is chosen per connection by the first byte the client sends):
//   tcp-server --listen ADDR:PORT...   [--quiet]
//     e  echo; FIN after the client's FIN
//     r  reset as soon as the byte arrives
//     f  send 64 KiB, FIN, then reset 0-2 ms later (FIN then RST from the backend)
//     b  blast: send --blast bytes (default 4 MiB) as fast as the client takes them, then FIN
//     m  send 1 MiB and reset in the middle of it
//     n  never read; close after 3 s
//     s  read slowly (pause 20 ms every chunk), echo nothing, FIN after the client's FIN
// Clients:
//   tcp-mix    --target T --conns N [--parallel P] [--kinds k1,k2] [--timeout MS] [--seed S]
//              N connections, P at a time, each one kind from MIX_KINDS (round robin, or only --kinds);
//              prints {"event":"mix-result","conns","byKind",...}
//   hold       --target T --conns N [--hold MS]: open N connections at once, each sends "e" plus a line
//              and keeps the connection open MS; prints {"event":"hold-result","connected","echoed",...}
//   hello      --target T [--local-port P] [--timeout MS]: one echo round trip ("ehello\n");
//              prints {"event":"hello-result","ok","local","localPort","error"}
//   udp-steady --target T --local-port P --every MS --duration MS: one socket, a numbered datagram every MS;
//              prints {"event":"steady-result","sent","answered"}
//   udp-spoof  --target T --sources FIRST-LAST --ports N [--timeout MS]: from every address in the range
//              (an AnyIP `local` route makes them this host's), N sockets each, one datagram each;
//              prints {"event":"spoof-result","flows","answered"}
//   tcp-load   --target T --duration MS [--parallel P]: echo round trips in a loop, P at a time, for MS;
//              prints {"event":"load-result","ok","failed"}
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import { print, splitHostPort } from './peer-io';

// ---- the abusive backend --------------------------------------------------

const KiB = 1024;
const MiB = 1024 * KiB;

function serve(listen: string[], quiet: boolean, blastBytes: number): void {
  for (const spec of listen) {
    const { host, port } = splitHostPort(spec);
    const server = net.createServer({ allowHalfOpen: true }, (socket) => handle(socket, quiet, blastBytes));
    server.on('error', (err: NodeJS.ErrnoException) => print({ event: 'server-error', code: err.code }));
    server.listen({ host, port, backlog: 4096 }, () => print({ event: 'listening', host, port }));
  }
}

function handle(socket: net.Socket, quiet: boolean, blastBytes: number): void {
  if (!quiet) print({ event: 'accept', remote: socket.remoteAddress, port: socket.remotePort });
  // A backend that misbehaves still must not pile up sockets: none lives past 15 s.
  const reaper = setTimeout(() => socket.destroy(), 15_000);
  socket.on('close', () => clearTimeout(reaper));
  socket.on('error', () => { /* resets are the point here */ });
  socket.once('data', (first: Buffer) => {
    const mode = String.fromCharCode(first[0]);
    const rest = first.subarray(1);
    switch (mode) {
      case 'e':
        if (rest.length > 0) socket.write(rest);
        socket.pipe(socket);
        break;
      case 'r':
        socket.resetAndDestroy();
        break;
      case 'f':
        socket.resume();
        socket.end(Buffer.alloc(64 * KiB, 'f'));
        setTimeout(() => socket.resetAndDestroy(), Math.floor(Math.random() * 3));
        break;
      case 'b':
        socket.resume();
        blast(socket, blastBytes, () => socket.end());
        break;
      case 'm':
        socket.resume();
        blast(socket, MiB, () => { /* never reached in time */ });
        setTimeout(() => socket.resetAndDestroy(), 2 + Math.floor(Math.random() * 5));
        break;
      case 'n':
        socket.pause();
        setTimeout(() => socket.destroy(), 3000);
        break;
      case 's':
        socket.on('data', () => { socket.pause(); setTimeout(() => socket.resume(), 20); });
        socket.on('end', () => socket.end());
        break;
      default:
        socket.destroy();
    }
  });
}

/** Write total bytes in 64 KiB chunks, waiting for drain: the peer's reading sets the pace. */
function blast(socket: net.Socket, total: number, done: () => void): void {
  const chunk = Buffer.alloc(64 * KiB, 'b');
  let left = total;
  const pump = (): void => {
    while (left > 0 && !socket.destroyed) {
      left -= chunk.length;
      if (!socket.write(chunk)) {
        socket.once('drain', pump);
        return;
      }
    }
    if (!socket.destroyed) done();
  };
  pump();
}

// ---- the abusive TCP client ------------------------------------------------

/**
 * What one client connection does. Names say client action / backend action.
 * The first five are the pattern of the fd leak (a reset meeting a FIN that
 * relay is still passing on), from either side.
 */
const MIX_KINDS = {
  /** client sends and FINs; the backend resets on the data: relay's shutdown to the backend meets the backend's RST */
  'fin/backend-reset': (s: net.Socket) => { s.end('r'); },
  /** the same with 128 KiB after the 'r': relay is still writing when the backend's RST comes */
  'big-fin/backend-reset': (s: net.Socket) => { s.end(Buffer.concat([Buffer.from('r'), Buffer.alloc(128 * KiB, 'x')])); },
  /** client sends, FINs and resets 0-2 ms later */
  'fin-then-reset/echo': (s: net.Socket) => {
    s.end(`e${'x'.repeat(1000)}`);
    setTimeout(() => s.resetAndDestroy(), Math.floor(Math.random() * 3));
  },
  /** backend sends 64 KiB, FINs and resets; the client reads */
  'read/backend-fin-then-reset': (s: net.Socket) => { s.write('f'); s.resume(); },
  /** backend FINs then resets while the client FINs too */
  'fin/backend-fin-then-reset': (s: net.Socket) => { s.end('f'); s.resume(); },
  /** the client FINs after a big write the backend reads slowly, then resets */
  'big-fin-then-reset/slow-reader': (s: net.Socket) => {
    s.end(Buffer.alloc(256 * KiB, 's'));
    setTimeout(() => s.resetAndDestroy(), 5 + Math.floor(Math.random() * 20));
  },
  /** reset as soon as connected, nothing sent */
  'reset-at-once': (s: net.Socket) => { s.resetAndDestroy(); },
  /** send, then reset at once */
  'send-reset/echo': (s: net.Socket) => { s.write('ehello'); s.resetAndDestroy(); },
  /** read 64 KiB or so of a blast, then reset mid-transfer */
  'reset-mid-transfer/blast': (s: net.Socket) => {
    let got = 0;
    s.write('b');
    s.on('data', (d: Buffer) => { got += d.length; if (got >= 64 * KiB) s.resetAndDestroy(); });
  },
  /** the backend resets mid-transfer */
  'read/backend-reset-mid-transfer': (s: net.Socket) => { s.write('m'); s.resume(); },
  /** a slow reader: 20 ms pauses, gives up (destroy, so RST with unread data) after 300 ms */
  'slow-reader/blast': (s: net.Socket) => {
    s.write('b');
    s.on('data', () => { s.pause(); setTimeout(() => s.resume(), 20); });
    setTimeout(() => s.destroy(), 300);
  },
  /** never reads a blast; closes after 200 ms */
  'never-reader/blast': (s: net.Socket) => { s.write('b'); s.pause(); setTimeout(() => s.destroy(), 200); },
  /** writes 1 MiB at a backend that never reads; FIN, then reset after 200 ms */
  'big-write/never-reading-backend': (s: net.Socket) => {
    s.end(Buffer.alloc(MiB, 'n'));
    setTimeout(() => s.resetAndDestroy(), 200);
  },
  /** a well-behaved echo round trip among them */
  'echo': (s: net.Socket) => { s.end('eping'); s.resume(); },
} as const;

type Kind = keyof typeof MIX_KINDS;

async function tcpMix(target: string, conns: number, parallel: number, kinds: Kind[], timeoutMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  const byKind: Record<string, { n: number; connected: number; reset: number; timedOut: number }> = {};
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < conns) {
      const kind = kinds[next++ % kinds.length];
      const tally = (byKind[kind] ??= { n: 0, connected: 0, reset: 0, timedOut: 0 });
      tally.n++;
      const outcome = await abusiveConnection(host, port, kind, timeoutMs);
      if (outcome.connected) tally.connected++;
      if (outcome.reset) tally.reset++;
      if (outcome.timedOut) tally.timedOut++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, conns) }, worker));
  print({ event: 'mix-result', conns, byKind });
}

function abusiveConnection(host: string, port: number, kind: Kind, timeoutMs: number):
  Promise<{ connected: boolean; reset: boolean; timedOut: boolean }> {
  return new Promise((resolve) => {
    const outcome = { connected: false, reset: false, timedOut: false };
    const socket = net.connect({ host, port, allowHalfOpen: true });
    const finish = (): void => { clearTimeout(timer); socket.destroy(); resolve(outcome); };
    const timer = setTimeout(() => { outcome.timedOut = true; finish(); }, timeoutMs);
    socket.on('connect', () => { outcome.connected = true; MIX_KINDS[kind](socket); });
    socket.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ECONNRESET') outcome.reset = true; });
    socket.on('end', () => { if (!socket.destroyed) socket.end(); });
    socket.on('close', finish);
  });
}

// ---- well-behaved clients that measure -----------------------------------

/** N connections open at once, each echoing one line, held for holdMs. */
async function hold(target: string, conns: number, holdMs: number, timeoutMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  const sockets: net.Socket[] = [];
  const errors: Record<string, number> = {};
  let connected = 0;
  let echoed = 0;
  let closedEarly = 0;
  await Promise.all(Array.from({ length: conns }, () => new Promise<void>((resolve) => {
    const socket = net.connect({ host, port });
    sockets.push(socket);
    const timer = setTimeout(resolve, timeoutMs);
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => { connected++; socket.write('ehold\n'); });
    socket.on('data', (d: string) => {
      reply += d;
      if (reply === 'hold\n') { echoed++; clearTimeout(timer); resolve(); }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => { errors[err.code ?? 'error'] = (errors[err.code ?? 'error'] ?? 0) + 1; });
    socket.on('close', () => { closedEarly++; clearTimeout(timer); resolve(); });
  })));
  const stillOpen = sockets.filter((s) => !s.destroyed).length;
  print({ event: 'hold-open', conns, connected, echoed, stillOpen });
  await new Promise((r) => setTimeout(r, holdMs));
  for (const s of sockets) s.destroy();
  print({ event: 'hold-result', conns, connected, echoed, closedEarly, stillOpen, errors });
}

function hello(target: string, localPort: number | undefined, timeoutMs: number): void {
  const { host, port } = splitHostPort(target);
  let reply = '';
  const result = { event: 'hello-result', ok: false, local: '', localPort: 0, reply: '', error: null as string | null };
  const socket = net.connect({ host, port, allowHalfOpen: true, ...(localPort ? { localPort } : {}) });
  let reported = false;
  const done = (): void => {
    if (reported) return;
    reported = true;
    clearTimeout(timer);
    result.reply = reply;
    result.ok = reply === 'hello\n';
    print(result);
    socket.destroy();
  };
  const timer = setTimeout(() => { result.error ??= 'timeout'; done(); }, timeoutMs);
  socket.setEncoding('utf8');
  socket.on('connect', () => {
    result.local = socket.localAddress ?? '';
    result.localPort = socket.localPort ?? 0;
    socket.end('ehello\n');
  });
  socket.on('data', (d: string) => { reply += d; });
  socket.on('end', done);
  socket.on('error', (err: NodeJS.ErrnoException) => { result.error = err.code ?? err.message; });
  socket.on('close', done);
}

/** Echo round trips in a loop, parallel at a time, until durationMs has passed. */
async function tcpLoad(target: string, durationMs: number, parallel: number, timeoutMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  const until = Date.now() + durationMs;
  let ok = 0;
  let failed = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < until) {
      const good = await new Promise<boolean>((resolve) => {
        let reply = '';
        const socket = net.connect({ host, port, allowHalfOpen: true });
        const timer = setTimeout(() => { socket.destroy(); resolve(false); }, timeoutMs);
        socket.setEncoding('utf8');
        socket.on('connect', () => socket.end('eload'));
        socket.on('data', (d: string) => { reply += d; });
        socket.on('end', () => { clearTimeout(timer); socket.destroy(); resolve(reply === 'load'); });
        socket.on('error', () => { clearTimeout(timer); socket.destroy(); resolve(false); });
      });
      if (good) ok++;
      else {
        failed++;
        await new Promise((r) => setTimeout(r, 10)); // a refused backend fails fast: do not spin
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  print({ event: 'load-result', ok, failed });
}

// ---- UDP ----------------------------------------------------------------------

function typeOf(host: string): 'udp4' | 'udp6' {
  return net.isIPv6(host) ? 'udp6' : 'udp4';
}

/** One socket, one numbered datagram every everyMs; counts the answers (an echo backend). */
async function udpSteady(target: string, localPort: number, everyMs: number, durationMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  const socket = dgram.createSocket({ type: typeOf(host) });
  await new Promise<void>((resolve) => socket.bind(localPort, () => resolve()));
  const answers = new Set<string>();
  socket.on('message', (msg) => answers.add(msg.toString()));
  socket.on('error', () => { /* ECONNREFUSED and the like: counted as unanswered */ });
  let sent = 0;
  const until = Date.now() + durationMs;
  while (Date.now() < until) {
    socket.send(`steady ${sent++}`, port, host);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  await new Promise((r) => setTimeout(r, 500)); // the last answers
  print({ event: 'steady-result', sent, answered: answers.size });
  socket.close();
}

/** "203.0.113.10-203.0.113.200" -> every address in it (IPv4, last octet only varies). */
function addressRange(spec: string): string[] {
  const [first, last] = spec.split('-');
  const prefix = first.slice(0, first.lastIndexOf('.') + 1);
  const from = Number(first.slice(first.lastIndexOf('.') + 1));
  const to = Number(last.slice(last.lastIndexOf('.') + 1));
  return Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);
}

/** From every source address in range, portsEach sockets, one datagram each, batch at a time. */
async function udpSpoof(target: string, sources: string[], portsEach: number, batch: number, timeoutMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  const flows = sources.flatMap((address) => Array.from({ length: portsEach }, () => address));
  let answered = 0;
  let bindFailed = 0;
  for (let start = 0; start < flows.length; start += batch) {
    const results = await Promise.all(flows.slice(start, start + batch).map((address) => new Promise<boolean>((resolve) => {
      const socket = dgram.createSocket({ type: typeOf(host) });
      const finish = (ok: boolean): void => { clearTimeout(timer); socket.close(); resolve(ok); };
      const timer = setTimeout(() => finish(false), timeoutMs);
      socket.on('message', () => finish(true));
      socket.on('error', () => { bindFailed++; finish(false); });
      socket.bind(0, address, () => socket.send(`spoof ${address}`, port, host));
    })));
    answered += results.filter(Boolean).length;
  }
  print({ event: 'spoof-result', flows: flows.length, answered, bindFailed, sources: sources.length });
}

function main(): void {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      listen: { type: 'string', multiple: true },
      target: { type: 'string', default: '' },
      conns: { type: 'string', default: '100' },
      parallel: { type: 'string', default: '50' },
      kinds: { type: 'string' },
      timeout: { type: 'string', default: '5000' },
      hold: { type: 'string', default: '2000' },
      quiet: { type: 'boolean', default: false },
      blast: { type: 'string', default: String(4 * MiB) },
      'local-port': { type: 'string' },
      every: { type: 'string', default: '20' },
      duration: { type: 'string', default: '3000' },
      sources: { type: 'string', default: '' },
      ports: { type: 'string', default: '1' },
      batch: { type: 'string', default: '500' },
    },
  });
  const timeout = Number(values.timeout);
  const localPort = values['local-port'] === undefined ? undefined : Number(values['local-port']);
  switch (mode) {
    case 'tcp-server':
      return serve(values.listen ?? [], values.quiet ?? false, Number(values.blast));
    case 'tcp-mix': {
      const kinds = (values.kinds ? values.kinds.split(',') : Object.keys(MIX_KINDS)) as Kind[];
      const unknown = kinds.filter((k) => !(k in MIX_KINDS));
      if (unknown.length > 0) throw new Error(`unknown kinds: ${unknown.join(', ')}`);
      void tcpMix(values.target, Number(values.conns), Number(values.parallel), kinds, timeout);
      return;
    }
    case 'hold':
      void hold(values.target, Number(values.conns), Number(values.hold), timeout);
      return;
    case 'hello':
      return hello(values.target, localPort, timeout);
    case 'tcp-load':
      void tcpLoad(values.target, Number(values.duration), Number(values.parallel), timeout);
      return;
    case 'udp-steady':
      void udpSteady(values.target, localPort ?? 0, Number(values.every), Number(values.duration));
      return;
    case 'udp-spoof':
      void udpSpoof(values.target, addressRange(values.sources), Number(values.ports), Number(values.batch), timeout);
      return;
    default:
      process.stderr.write(`unknown mode ${mode}\n`);
      process.exit(2);
  }
}

main();
