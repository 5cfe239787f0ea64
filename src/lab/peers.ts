// Real servers in the lab: nginx as the HTTP backend whose access log shows
// the address it saw, and the small Node peers in tools.ts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, Namespace, SpawnedProcess, waitForListener } from './netns';
import { distFile } from './topology';

export interface NginxBackend {
  proc: SpawnedProcess;
  /**
   * Lines of the access log: "$remote_addr $remote_port \"$request\" $server_addr $proxy_protocol_addr
   * $proxy_protocol_port" (the last two empty unless it listens with proxyProtocol).
   */
  accessLog(): string[];
}

export async function startNginxHttp(lab: Lab, ns: Namespace, addresses: string[], port: number,
  options: { proxyProtocol?: boolean } = {}): Promise<NginxBackend> {
  const dir = fs.mkdtempSync(path.join(lab.dir, 'nginx-'));
  const logFile = path.join(dir, 'access.log');
  const pp = options.proxyProtocol ? ' proxy_protocol' : '';
  const listens = addresses.map((a) => `    listen ${a.includes(':') ? `[${a}]` : a}:${port}${pp};`).join('\n');
  const conf = `
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
${nginxTempPaths(dir)}
  log_format peer '$remote_addr $remote_port "$request" $server_addr $proxy_protocol_addr $proxy_protocol_port';
  server {
${listens}
    access_log ${logFile} peer;
    location / { return 200 "hello from the backend\\n"; }
  }
}
`;
  const confFile = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confFile, conf);
  const proc = lab.spawn(ns, ['nginx', '-c', confFile, '-p', dir]);
  await waitForListener(ns, 'tcp', port);
  return {
    proc,
    accessLog: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean) : []),
  };
}

/**
 * nginx's http temp directories inside the lab's own directory: the packaged
 * defaults under /var/lib/nginx may not exist or be writable.
 */
export function nginxTempPaths(dir: string): string {
  return ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((kind) => `  ${kind}_temp_path ${dir}/${kind === 'client_body' ? 'body' : kind};`).join('\n');
}

export function toolsPath(): string {
  return distFile('lab', 'tools.js');
}

export function udpToolsPath(): string {
  return distFile('lab', 'udp-tools.js');
}

/** Start one of tools.ts's servers inside ns. */
export async function startToolServer(lab: Lab, ns: Namespace, mode: string, listen: string[], port: number): Promise<SpawnedProcess> {
  const proc = lab.spawn(ns, [process.execPath, toolsPath(), mode, ...listen.flatMap((l) => ['--listen', l])]);
  await waitForListener(ns, 'tcp', port);
  return proc;
}

/** Events a tools.ts process printed, parsed. */
export function events(proc: SpawnedProcess): Record<string, unknown>[] {
  return proc.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
}

/**
 * HAProxy in the foreground inside ns with the given `frontend`/`backend`
 * sections (tcp mode defaults are added), listening on waitPort before it returns.
 */
export async function startHaproxy(lab: Lab, ns: Namespace, sections: string, waitPort: number): Promise<SpawnedProcess> {
  const dir = fs.mkdtempSync(path.join(lab.dir, 'haproxy-'));
  const conf = `
global
  pidfile ${dir}/haproxy.pid
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
${sections}
`;
  const confFile = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(confFile, conf);
  const proc = lab.spawn(ns, ['haproxy', '-db', '-f', confFile]);
  await waitForListener(ns, 'tcp', waitPort);
  return proc;
}
