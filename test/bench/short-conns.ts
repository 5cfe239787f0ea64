// The client of the system-call case, run as its own process in the client
// namespace (`node short-conns.js --target ADDR:PORT --conns N --parallel P`):
// N short HTTP requests, each on a new TCP connection (`Connection: close`),
// at most P at a time. Each reply's body is the address the backend saw
// (see httpBackendConfig), counted by address, so the case can check the
// proxy stayed transparent. A fixed count, not a duration as with wrk, so the
// proxy's system calls divide by an exact number of connections. Prints one
// JSON line: {"event":"done","ok":N,"failed":N,"errors":{...},"saw":{...},"ms":N}.
// --proxy-v2: each connection starts with a PROXY v2 header naming its own
// address, in the same write as the request (as a front sends it): the
// tcp-conn-rate-proxy-v2 case asks so which address the backend saw.
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { writeProxyHeader } from '../../src/proxy-protocol';

function splitHostPort(spec: string): { host: string; port: number } {
  const cut = spec.lastIndexOf(':');
  return { host: spec.slice(0, cut).replace(/^\[|\]$/g, ''), port: Number(spec.slice(cut + 1)) };
}

/** One request on its own connection; resolves with the body, or rejects. */
function request(host: string, port: number, timeoutMs: number, proxyV2 = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const chunks: Buffer[] = [];
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('timeout')));
    socket.once('connect', () => {
      const get = Buffer.from(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      const header = proxyV2 ? writeProxyHeader('v2', 'stream', { address: socket.localAddress!, port: socket.localPort! },
        { address: host, port }) : undefined;
      socket.write(header ? Buffer.concat([header, get]) : get);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', reject);
    // The server closes after its reply (Connection: close); Node then closes our side too.
    socket.once('close', (hadError) => {
      if (hadError) return;
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      if (!text.startsWith('HTTP/1.1 200') || split < 0) return reject(new Error('bad reply'));
      resolve(text.slice(split + 4).trim());
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      conns: { type: 'string', default: '1' },
      parallel: { type: 'string', default: '1' },
      timeout: { type: 'string', default: '5000' },
      'proxy-v2': { type: 'boolean', default: false },
    },
  });
  if (!values.target) {
    process.stderr.write('usage: short-conns.js --target ADDR:PORT --conns N [--parallel P] [--timeout MS]\n');
    process.exit(2);
  }
  const { host, port } = splitHostPort(values.target);
  const conns = Number(values.conns);
  const timeoutMs = Number(values.timeout);
  const saw: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let ok = 0;
  let next = 0;
  const start = Date.now();
  const worker = async () => {
    while (next < conns) {
      next++;
      try {
        const body = await request(host, port, timeoutMs, values['proxy-v2']);
        saw[body] = (saw[body] ?? 0) + 1;
        ok++;
      } catch (err) {
        const key = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        errors[key] = (errors[key] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Number(values.parallel), conns) }, worker));
  process.stdout.write(`${JSON.stringify({ event: 'done', ok, failed: conns - ok, errors, saw, ms: Date.now() - start })}\n`);
}

void main();
