// The admin listener: GET /metrics, /healthz and /status, and POST
// /backends/{service}/{addr}/drain|enable. It listens on loopback or a unix
// socket unless admin-allow-remote; off loopback every POST needs the bearer
// token of admin-token-file (and is refused without one), since a POST takes
// backends out of rotation.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as crypto from 'node:crypto';
import type { AdminOptions } from '../config';
import type { Logger } from '../log';
import { RelayError } from '../errors';
import { formatEndpoint, isLoopback } from '../addr';

/**
 * What the admin API serves: one process's services (src/admin/local.ts), or
 * with --workers the primary's view of all its workers (src/admin/primary.ts).
 * This file is the HTTP side only: routes, bounds and authorization.
 */
export interface AdminTarget {
  /** The Prometheus text and its content type. */
  metrics(): Promise<{ text: string; contentType: string }>;
  /** GET /status's body. */
  status(): Promise<object>;
  /** /healthz: 200 while serving; false once relay is stopping, so a load balancer in front stops sending. */
  health(): { serving: boolean; text: string };
  /** Drain or enable a backend; resolves once it is in effect (with workers: in every worker). */
  setDrained(service: string, backend: string, drained: boolean): Promise<DrainOutcome>;
}

/** A drain's answer: done (with fields for the reply), or refused with an HTTP status and why. */
export type DrainOutcome = { done: true; fields?: object } | { done: false; status: number; error: string };

/** Bounds: the API is for an operator and a scraper, not for a crowd. */
const MAX_ADMIN_CONNECTIONS = 32;
const REQUEST_TIMEOUT_MS = 10_000;

const DRAIN_PATH = /^\/backends\/([^/]+)\/([^/]+)\/(drain|enable)$/;

export class AdminServer {
  private constructor(private readonly server: http.Server, readonly where: string) {}

  /** Listen; throws RelayError (address in use, a bad token file) so relay refuses to start. */
  static async start(options: AdminOptions, target: AdminTarget, log: Logger): Promise<AdminServer> {
    const token = options.tokenFile !== undefined ? readToken(options.tokenFile) : undefined;
    const remote = options.listen.kind === 'tcp' && !isLoopback(options.listen.endpoint.address);
    const server = http.createServer((req, res) => {
      handle(req, res, { target, token, remote, log })
        .catch((err) => reply(res, 500, { error: String((err as Error).message) }));
    });
    server.maxConnections = MAX_ADMIN_CONNECTIONS;
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    server.headersTimeout = REQUEST_TIMEOUT_MS;
    const where = options.listen.kind === 'unix' ? options.listen.path
      : formatEndpoint(options.listen.endpoint.address, options.listen.endpoint.port);
    await listen(server, options, where);
    return new AdminServer(server, where);
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}

function readToken(path: string): string {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (err) {
    throw new RelayError('ERR_CONFIG', `admin-token-file ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const token = text.trim();
  if (token.length < 16) {
    throw new RelayError('ERR_CONFIG', `admin-token-file ${path}: the token is ${token.length === 0 ? 'empty' : 'shorter than 16 characters'}`,
      'write a long random token, e.g. head -c 32 /dev/urandom | base64 > FILE');
  }
  return token;
}

async function listen(server: http.Server, options: AdminOptions, where: string): Promise<void> {
  if (options.listen.kind === 'unix') removeStaleSocket(options.listen.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new RelayError('ERR_ADMIN',
      `admin: cannot listen on ${where} (${err.code ?? err.message})`,
      err.code === 'EADDRINUSE' ? 'another process listens there: choose another admin address' : undefined)));
    if (options.listen.kind === 'unix') server.listen(options.listen.path, resolve);
    else server.listen(options.listen.endpoint.port, options.listen.endpoint.address, resolve);
  });
}

/** A socket file left by a relay that did not exit cleanly would make listen fail with EADDRINUSE. */
function removeStaleSocket(path: string): void {
  try {
    if (fs.lstatSync(path).isSocket()) fs.unlinkSync(path);
  } catch {
    // Not there: nothing to remove.
  }
}

interface Context {
  target: AdminTarget;
  token: string | undefined;
  remote: boolean;
  log: Logger;
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, ctx: Context): Promise<void> {
  req.resume(); // no endpoint reads a body
  const path = (req.url ?? '/').split('?')[0];
  const method = req.method ?? 'GET';
  if (path === '/metrics' || path === '/healthz' || path === '/status') {
    if (method !== 'GET' && method !== 'HEAD') return reply(res, 405, { error: `${path} takes GET` }, { Allow: 'GET' });
    if (path === '/metrics') {
      const metrics = await ctx.target.metrics();
      return replyText(res, 200, metrics.text, metrics.contentType);
    }
    if (path === '/healthz') {
      const health = ctx.target.health();
      return replyText(res, health.serving ? 200 : 503, health.text);
    }
    return reply(res, 200, await ctx.target.status());
  }
  const drain = DRAIN_PATH.exec(path);
  if (!drain) return reply(res, 404, { error: `no such endpoint: ${path}` });
  if (method !== 'POST') return reply(res, 405, { error: `${path} takes POST` }, { Allow: 'POST' });
  const refusal = authorizationProblem(req, ctx);
  if (refusal) return reply(res, 401, { error: refusal }, { 'WWW-Authenticate': 'Bearer' });
  const [, serviceName, addr, action] = drain.map((part) => safeDecode(part));
  const outcome = await ctx.target.setDrained(serviceName, addr, action === 'drain');
  if (!outcome.done) return reply(res, outcome.status, { error: outcome.error });
  ctx.log.warn({ service: serviceName, backend: addr, by: 'admin API', ...outcome.fields },
    action === 'drain' ? 'backend drained: no new connections or sessions until enabled or a reload'
      : 'backend enabled: back in rotation (as its health allows)');
  return reply(res, 200, { service: serviceName, backend: addr, drained: action === 'drain', ...outcome.fields });
}

/** Why a POST is refused, or undefined when it may go on. */
function authorizationProblem(req: http.IncomingMessage, ctx: Context): string | undefined {
  if (ctx.token === undefined) {
    return ctx.remote ? 'admin listens off loopback without admin-token-file: POST is refused' : undefined;
  }
  const given = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
  if (given === undefined) return 'POST needs Authorization: Bearer TOKEN (the token of admin-token-file)';
  // Compared as digests, in constant time: the length of a wrong token tells nothing either.
  const digest = (text: string) => crypto.createHash('sha256').update(text).digest();
  return crypto.timingSafeEqual(digest(given), digest(ctx.token)) ? undefined : 'wrong token';
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function reply(res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  replyText(res, status, `${JSON.stringify(body, null, 2)}\n`, 'application/json', headers);
}

function replyText(res: http.ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8',
  headers: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}
