// nginx in two roles: the transparent stream proxy relay is compared with (TCP and UDP),
// and the HTTP backend for the connection-rate case. Each instance gets its
// own directory under the lab, so nothing touches /etc/nginx or /var/log.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, Namespace, SpawnedProcess, waitForListener } from '../../src/lab/netns';
import { formatEndpoint } from '../../src/addr';
import { FD_HARD_LIMIT, spawnPinned } from './lab';
import { nginxTempPaths } from '../../src/lab/peers';

/** Debian builds the stream module as a dynamic module. */
const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

export interface Nginx {
  proc: SpawnedProcess;
  dir: string;
  /** Lines of its error log at level warn or worse. */
  errors(): string[];
}

export const DEFAULT_WORKER_CONNECTIONS = 16384;

/** Settings shared by every role: one worker (the comparison is one core against one core). */
function mainContext(dir: string, extra: string, workerConnections = DEFAULT_WORKER_CONNECTIONS, workerProcesses = '1'): string {
  return `
daemon off;
worker_processes ${workerProcesses};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
# TCP: 2 fds per proxied connection; UDP: 1 per session: as many as the hard limit allows.
worker_rlimit_nofile ${FD_HARD_LIMIT};
events { worker_connections ${workerConnections}; }
${extra}`;
}

/**
 * A transparent TCP proxy: proxy_bind $remote_addr transparent binds each
 * upstream connection to the client's address, as relay does. `user root`
 * keeps the worker allowed to set IP_TRANSPARENT without relying on nginx
 * handing CAP_NET_RAW down to an unprivileged worker.
 */
export function streamProxyConfig(dir: string, listen: { host: string; port: number }, backend: { host: string; port: number },
  workers?: WorkerProcesses): string {
  return `load_module ${STREAM_MODULE};
user root;
${mainContext(dir, `stream {
  server {
    listen ${formatEndpoint(listen.host, listen.port)}${workers ? ' reuseport' : ''};
    proxy_bind $remote_addr transparent;
    proxy_pass ${formatEndpoint(backend.host, backend.port)};
  }
}`, DEFAULT_WORKER_CONNECTIONS, workers?.processes)}`;
}

/**
 * More than one worker (issue 13's `worker_processes auto`): each listener
 * then gets `reuseport`, one socket per worker as relay's workers have, so a
 * UDP client's datagrams stay with one worker and its session.
 */
export interface WorkerProcesses {
  processes: string;
}

export interface UdpProxyOptions {
  /** proxy_responses: end a session after this many replies; unset keeps it until proxy_timeout. */
  responses?: number;
  /** proxy_timeout: how long an idle session lives, e.g. '30s'. */
  timeout: string;
  /**
   * A UDP session takes two of nginx's connection slots (the client side,
   * sharing the listening socket's fd, and the upstream socket): many live
   * sessions need more than the default.
   */
  workerConnections?: number;
  workers?: WorkerProcesses;
}

/**
 * A transparent UDP proxy. $remote_addr:$remote_port binds each session's
 * upstream socket to the client's address and port, as relay does.
 */
export function udpStreamProxyConfig(dir: string, listen: { host: string; port: number }, backend: { host: string; port: number },
  o: UdpProxyOptions): string {
  return `load_module ${STREAM_MODULE};
user root;
${mainContext(dir, `stream {
  server {
    listen ${formatEndpoint(listen.host, listen.port)} udp${o.workers ? ' reuseport' : ''};
    proxy_bind $remote_addr:$remote_port transparent;
    proxy_pass ${formatEndpoint(backend.host, backend.port)};
    proxy_timeout ${o.timeout};
${o.responses !== undefined ? `    proxy_responses ${o.responses};\n` : ''}  }
}`, o.workerConnections, o.workers?.processes)}`;
}

/**
 * An HTTP server whose body is the address it saw, so one request through a
 * proxy proves the proxy is transparent. Access logging is off: it would cost
 * the backend CPU the load generator needs.
 */
export function httpBackendConfig(dir: string, listen: { host: string; port: number }): string {
  return mainContext(dir, `http {
  access_log off;
${nginxTempPaths(dir)}
  server {
    listen ${formatEndpoint(listen.host, listen.port)} backlog=4096;
    location / { return 200 "$remote_addr\\n"; }
  }
}`);
}

export async function startNginx(lab: Lab, ns: Namespace, cpu: number | string, name: string,
  config: (dir: string) => string, port: number, proto: 'tcp' | 'udp' = 'tcp'): Promise<Nginx> {
  const dir = fs.mkdtempSync(path.join(lab.dir, `nginx-${name}-`));
  const confFile = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confFile, config(dir));
  // -e: the error log before the config is read, else nginx opens /var/log/nginx/error.log.
  const proc = spawnPinned(lab, ns, cpu, ['nginx', '-c', confFile, '-p', dir, '-e', path.join(dir, 'error.log')]);
  await waitForListener(ns, proto, port).catch((err: Error) => {
    throw new Error(`nginx (${name}) did not start: ${proc.stderr().trim() || err.message}`);
  });
  const logFile = path.join(dir, 'error.log');
  return {
    proc,
    dir,
    errors: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n')
      .filter((l) => /\[(warn|error|crit|alert|emerg)\]/.test(l)) : []),
  };
}
