// Small TCP peers for the lab, where no packaged server fits: each runs as its
// own process inside a namespace (`node tools.js MODE --flags`) and reports on
// stdout, one JSON object a line, so tests assert on what the peer really saw.
//
// Servers: every accepted connection prints {"event":"accept","remote":...,"port":...}.
//   echo       echo everything; FIN after the client's FIN
//   hash       read until the client's FIN, then reply with sha256 and byte count, then FIN
//   fin-first  send "hello\n" and FIN at once, keep reading; print what arrived after
//   reset      reset the connection as soon as any data arrives
//   silent     accept and never reply (idle and drain tests)
//   reply-fin  on the first bytes, send an HTTP reply and the FIN in one segment (as
//              relay's own TcpHandle sends a last reply), then read to the end
// Clients:
//   hello      connect, send "hello", print the reply ({"event":"reply",...})
//   session    one connection scripted by flags (--send, --send-hex, --end, --send-after-end,
//              --reset-after, --local-address, --local-port); prints what happened as {"event":"session",...}
//   bulk       N concurrent connections each sending B random bytes through an
//              echo server; prints counts of byte-exact round trips
import * as net from 'node:net';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';
import { print, splitHostPort } from './peer-io';
import { TcpListener } from '../sys';

type Mode = 'echo' | 'hash' | 'fin-first' | 'reset' | 'silent' | 'reply-fin';

function serve(mode: Mode, listen: string[]): void {
  if (mode === 'reply-fin') return serveReplyWithFin(listen);
  for (const spec of listen) {
    const { host, port } = splitHostPort(spec);
    const server = net.createServer({ allowHalfOpen: true }, (socket) => handle(mode, socket));
    server.listen({ host, port, backlog: 4096 }, () => print({ event: 'listening', host, port }));
  }
}

function handle(mode: Mode, socket: net.Socket): void {
  print({ event: 'accept', remote: socket.remoteAddress, port: socket.remotePort });
  socket.on('error', (err: NodeJS.ErrnoException) => print({ event: 'error', code: err.code, remote: socket.remoteAddress }));
  switch (mode) {
    case 'echo':
      socket.pipe(socket);
      break;
    case 'hash': {
      const hash = crypto.createHash('sha256');
      let bytes = 0;
      socket.on('data', (d: Buffer) => { hash.update(d); bytes += d.length; });
      socket.on('end', () => socket.end(`${hash.digest('hex')} ${bytes}\n`));
      break;
    }
    case 'fin-first': {
      let received = '';
      socket.setEncoding('utf8');
      socket.end('hello\n');
      socket.on('data', (d: string) => { received += d; });
      socket.on('end', () => print({ event: 'received-after-fin', data: received }));
      break;
    }
    case 'reset':
      socket.once('data', () => socket.resetAndDestroy());
      break;
    case 'silent':
      socket.resume();
      socket.on('end', () => print({ event: 'client-end', remote: socket.remoteAddress }));
      socket.on('close', () => print({ event: 'close', remote: socket.remoteAddress }));
      break;
  }
}

/**
 * A backend whose reply and FIN always arrive together, so a test of what
 * relay does with them does not depend on how fast relay reads: relay's own
 * sockets send the reply with MSG_MORE and tack the FIN onto it.
 */
function serveReplyWithFin(listen: string[]): void {
  const body = 'hello from the backend\n';
  const reply = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n` +
    `Connection: close\r\nX-Padding: ${'.'.repeat(80)}\r\n\r\n${body}`);
  for (const spec of listen) {
    const { host, port } = splitHostPort(spec);
    const family = host.includes(':') ? 6 : 4;
    TcpListener.listen(host, port, family, family === 6, 4096, (client) => {
      const peer = client.peer();
      print({ event: 'accept', remote: peer?.address, port: peer?.port });
      let replied = false;
      client.readStart({
        data: () => {
          if (replied) return;
          replied = true;
          const sent = client.sendBeforeFin(reply);
          if (typeof sent !== 'number' || sent < reply.length) print({ event: 'error', code: 'short send' });
          client.shutdown(() => undefined);
        },
        end: () => client.close(),
      });
    }, (err) => print({ event: 'error', code: err.code }));
    print({ event: 'listening', host, port });
  }
}

/** A plain (non-transparent) forwarder, to show what a backend sees without relay. */
function forward(listen: string[], target: string): void {
  const to = splitHostPort(target);
  for (const spec of listen) {
    const { host, port } = splitHostPort(spec);
    net.createServer((client) => {
      const upstream = net.connect(to.port, to.host);
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    }).listen({ host, port }, () => print({ event: 'listening', host, port }));
  }
}

function hello(target: string, timeoutMs: number): void {
  const { host, port } = splitHostPort(target);
  let reply = '';
  const socket = net.connect({ host, port }, () => socket.end('hello\n'));
  const timer = setTimeout(() => { print({ event: 'error', code: 'timeout', target }); socket.destroy(); }, timeoutMs);
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => { reply += d; });
  socket.on('end', () => { clearTimeout(timer); print({ event: 'reply', target, local: socket.localAddress, data: reply }); });
  socket.on('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); print({ event: 'error', code: err.code, target }); });
}

interface SessionScript {
  target: string;
  send?: string;
  /** Bytes (hex) written in one write, before --send: a PROXY header and what follows it in one segment. */
  sendHex?: string;
  end: boolean;
  sendAfterEnd?: string;
  resetAfterMs?: number;
  localPort?: number;
  localAddress?: string;
  waitMs: number;
}

/** One scripted connection; reports what the client saw, for tests to assert on. */
function session(script: SessionScript): void {
  const { host, port } = splitHostPort(script.target);
  const started = Date.now();
  const outcome = { event: 'session', connected: false, local: '', localPort: 0, received: '',
    gotEnd: false, error: null as string | null, closedAfterMs: -1 };
  const socket = net.connect({ host, port, allowHalfOpen: true, ...(script.localPort ? { localPort: script.localPort } : {}),
    ...(script.localAddress ? { localAddress: script.localAddress } : {}) });
  const report = () => { clearTimeout(timer); print(outcome); socket.destroy(); };
  const timer = setTimeout(report, script.waitMs);
  socket.setEncoding('utf8');
  socket.on('connect', () => {
    outcome.connected = true;
    outcome.local = socket.localAddress ?? '';
    outcome.localPort = socket.localPort ?? 0;
    if (script.sendHex !== undefined) socket.write(Buffer.from(script.sendHex, 'hex'));
    if (script.send !== undefined) socket.write(script.send);
    if (script.end) socket.end();
    if (script.resetAfterMs !== undefined) setTimeout(() => socket.resetAndDestroy(), script.resetAfterMs);
  });
  socket.on('data', (d: string) => { outcome.received += d; });
  socket.on('end', () => {
    outcome.gotEnd = true;
    // Like an ordinary client: finish our side once the server finished its.
    if (socket.writable) socket.end(script.sendAfterEnd ?? "");
  });
  socket.on('error', (err: NodeJS.ErrnoException) => { outcome.error = err.code ?? err.message; });
  socket.on('close', () => {
    outcome.closedAfterMs = Date.now() - started;
    if (script.resetAfterMs === undefined) report();
  });
}

async function bulk(target: string, conns: number, bytes: number, timeoutMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  const results = await Promise.all(Array.from({ length: conns }, () => roundTrip(host, port, bytes, timeoutMs)));
  print({
    event: 'bulk',
    conns,
    exact: results.filter((r) => r === 'exact').length,
    mismatched: results.filter((r) => r === 'mismatch').length,
    failed: results.filter((r) => r.startsWith('error')).length,
    errors: [...new Set(results.filter((r) => r.startsWith('error')))].slice(0, 5),
  });
}

function roundTrip(host: string, port: number, bytes: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const payload = crypto.randomBytes(bytes);
    const expected = crypto.createHash('sha256').update(payload).digest('hex');
    const got = crypto.createHash('sha256');
    let received = 0;
    const socket = net.connect({ host, port, allowHalfOpen: true });
    const timer = setTimeout(() => { socket.destroy(); resolve(`error timeout after ${received} bytes`); }, timeoutMs);
    socket.on('connect', () => socket.end(payload));
    socket.on('data', (d: Buffer) => { got.update(d); received += d.length; });
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(received === bytes && got.digest('hex') === expected ? 'exact' : 'mismatch');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); resolve(`error ${err.code}`); });
  });
}

function main(): void {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      listen: { type: 'string', multiple: true },
      target: { type: 'string' },
      conns: { type: 'string', default: '1' },
      bytes: { type: 'string', default: '1024' },
      timeout: { type: 'string', default: '60000' },
      send: { type: 'string' },
      'send-hex': { type: 'string' },
      'local-address': { type: 'string' },
      end: { type: 'boolean', default: false },
      'send-after-end': { type: 'string' },
      'reset-after': { type: 'string' },
      'local-port': { type: 'string' },
    },
  });
  if (mode === 'hello') return hello(values.target ?? '', Number(values.timeout));
  if (mode === 'forward') return forward(values.listen ?? [], values.target ?? '');
  if (mode === 'session') {
    return session({
      target: values.target ?? '',
      send: values.send,
      sendHex: values['send-hex'],
      localAddress: values['local-address'],
      end: values.end ?? false,
      sendAfterEnd: values['send-after-end'],
      resetAfterMs: values['reset-after'] === undefined ? undefined : Number(values['reset-after']),
      localPort: values['local-port'] === undefined ? undefined : Number(values['local-port']),
      waitMs: Number(values.timeout),
    });
  }
  if (mode === 'bulk') {
    void bulk(values.target ?? '', Number(values.conns), Number(values.bytes), Number(values.timeout));
    return;
  }
  if (!['echo', 'hash', 'fin-first', 'reset', 'silent', 'reply-fin'].includes(mode)) {
    process.stderr.write(`unknown mode ${mode}\n`);
    process.exit(2);
  }
  serve(mode as Mode, values.listen ?? []);
}

main();
