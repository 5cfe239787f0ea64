// UDP peers for the lab, one process each inside a namespace, reporting JSON
// lines on stdout (like tools.ts).
//   echo   --listen ADDR:PORT...  print {"event":"udp","remote","port","bytes"} per datagram and echo it back
//          (--push N --push-every MS: then send it back N more times, MS apart: a backend that talks on its own)
//          (--proxy-v2: each datagram starts with a PROXY v2 header: print its source too, echo the payload alone)
//   send   --target ADDR:PORT [--local-address A] [--local-port P] [--sizes 0,100,65507] [--replies N]
//          send from ONE socket, wait for the replies (one per datagram, or N); print {"event":"send-result",...}
//          (--prefix-hex H: H before each datagram, a front's PROXY header; --reply-prefix-hex H: replies start with H)
//   flows  --target ADDR:PORT --flows N [--batch B]: N sockets (N client ports), one
//          request each, in batches; print {"event":"flows-result","answered",...}
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { print, splitHostPort } from './peer-io';
import { parseProxyHeader } from '../proxy-protocol';

function typeOf(host: string): 'udp4' | 'udp6' {
  return net.isIPv6(host) ? 'udp6' : 'udp4';
}

/**
 * Room for a burst: relay can hand the backend thousands of new clients'
 * datagrams within a millisecond, faster than this echo (which prints a line
 * for each) reads them. The kernel caps it at net.core.rmem_max.
 */
const ECHO_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

function echo(listen: string[], push: { count: number; everyMs: number }, proxyV2 = false): void {
  for (const spec of listen) {
    const { host, port } = splitHostPort(spec);
    const socket = dgram.createSocket({ type: typeOf(host), recvBufferSize: ECHO_RECEIVE_BUFFER_BYTES });
    socket.on('message', (received, rinfo) => {
      let msg = received;
      if (proxyV2) {
        const parsed = parseProxyHeader(received, 'v2');
        if (parsed.status !== 'ok' || parsed.header.command !== 'proxy') {
          print({ event: 'udp-bad-header', remote: rinfo.address, status: parsed.status });
          return;
        }
        msg = received.subarray(parsed.length);
        print({ event: 'udp', remote: rinfo.address, port: rinfo.port, bytes: msg.length,
          proxySource: parsed.header.source.address, proxyPort: parsed.header.source.port });
      } else {
        print({ event: 'udp', remote: rinfo.address, port: rinfo.port, bytes: msg.length });
      }
      socket.send(msg, rinfo.port, rinfo.address);
      for (let i = 1; i <= push.count; i++) {
        setTimeout(() => socket.send(msg, rinfo.port, rinfo.address), i * push.everyMs);
      }
    });
    socket.bind(port, host, () => print({ event: 'listening', host, port }));
  }
}

async function send(target: string, localAddress: string | undefined, localPort: number, sizes: number[],
  expectedReplies: number | undefined, timeoutMs: number,
  prefixes: { send: Buffer; reply: Buffer } = { send: Buffer.alloc(0), reply: Buffer.alloc(0) }): Promise<void> {
  const { host, port } = splitHostPort(target);
  const socket = dgram.createSocket({ type: typeOf(host) });
  const replies: { from: string; bytes: number; exact: boolean }[] = [];
  const payloads = sizes.map((size, i) => Buffer.alloc(size, i + 1));
  await new Promise<void>((resolve) => socket.bind(localPort, localAddress, () => resolve()));
  const local = socket.address();
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    socket.on('message', (msg, rinfo) => {
      const expected = payloads[replies.length];
      const exact = expected !== undefined && msg.equals(Buffer.concat([prefixes.reply, expected]));
      replies.push({ from: `${rinfo.address}:${rinfo.port}`, bytes: msg.length, exact });
      if (replies.length === (expectedReplies ?? payloads.length)) { clearTimeout(timer); resolve(); }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => print({ event: 'error', code: err.code }));
  });
  for (const payload of payloads) {
    socket.send(prefixes.send.length > 0 ? Buffer.concat([prefixes.send, payload]) : payload, port, host);
    await new Promise((r) => setTimeout(r, 5)); // keep order: one datagram at a time
  }
  await done;
  print({ event: 'send-result', local: local.address, localPort: local.port, sent: payloads.length, replies });
  socket.close();
}

async function flows(target: string, count: number, batch: number, timeoutMs: number): Promise<void> {
  const { host, port } = splitHostPort(target);
  let answered = 0;
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const results = await Promise.all(Array.from({ length: n }, () => oneFlow(host, port, timeoutMs)));
    answered += results.filter(Boolean).length;
  }
  print({ event: 'flows-result', flows: count, answered });
}

function oneFlow(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket({ type: typeOf(host) });
    const finish = (ok: boolean) => { clearTimeout(timer); socket.close(); resolve(ok); };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('message', () => finish(true));
    socket.on('error', () => finish(false));
    socket.send(Buffer.from('flow'), port, host);
  });
}

function main(): void {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      listen: { type: 'string', multiple: true },
      target: { type: 'string', default: '' },
      'local-address': { type: 'string' },
      'local-port': { type: 'string', default: '0' },
      sizes: { type: 'string', default: '32' },
      flows: { type: 'string', default: '1' },
      batch: { type: 'string', default: '200' },
      timeout: { type: 'string', default: '3000' },
      replies: { type: 'string' },
      push: { type: 'string', default: '0' },
      'push-every': { type: 'string', default: '100' },
      'proxy-v2': { type: 'boolean', default: false },
      'prefix-hex': { type: 'string', default: '' },
      'reply-prefix-hex': { type: 'string', default: '' },
    },
  });
  const timeout = Number(values.timeout);
  if (mode === 'echo') {
    return echo(values.listen ?? [], { count: Number(values.push), everyMs: Number(values['push-every']) }, values['proxy-v2']);
  }
  if (mode === 'send') {
    void send(values.target!, values['local-address'], Number(values['local-port']),
      values.sizes!.split(',').map(Number), values.replies === undefined ? undefined : Number(values.replies), timeout,
      { send: Buffer.from(values['prefix-hex']!, 'hex'), reply: Buffer.from(values['reply-prefix-hex']!, 'hex') });
    return;
  }
  if (mode === 'flows') {
    void flows(values.target!, Number(values.flows), Number(values.batch), timeout);
    return;
  }
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}

main();
