// BIRD 2 in the lab: the configuration files and the announce script that
// docs/scale-out.md shows, from docs/examples/, run as they are. Only their
// {{NAME}} address fields are filled in (the documented template mechanism).
// Every BIRD runs inside a lab namespace with its own config, control socket
// and pid file in the lab's directory; none touches the host's namespace.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, Namespace, SpawnedProcess } from './netns';

/** docs/examples/ of this checkout, whether we run from dist/ or from the .ts sources. */
export function examplesDir(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'docs', 'examples'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`docs/examples not found above ${__dirname}`);
    dir = up;
  }
  return path.join(dir, 'docs', 'examples');
}

/** A docs/examples/ file with each {{NAME}} replaced; throws if a field has no value. */
export function renderExample(file: string, values: Record<string, string>): string {
  const text = fs.readFileSync(path.join(examplesDir(), file), 'utf8');
  return text.replace(/\{\{([A-Z0-9_]+)\}\}/g, (_, name: string) => {
    if (values[name] === undefined) throw new Error(`${file}: no value for {{${name}}}`);
    return values[name];
  });
}

export interface Bird {
  proc: SpawnedProcess;
  socket: string;
  /** birdc inside the namespace; returns its output. */
  birdc(...command: string[]): string;
}

/** Start BIRD in the foreground inside ns with this configuration text. */
export async function startBird(lab: Lab, ns: Namespace, name: string, config: string): Promise<Bird> {
  const dir = fs.mkdtempSync(path.join(lab.dir, `bird-${name}-`));
  const [conf, socket, pid] = ['bird.conf', 'bird.ctl', 'bird.pid'].map((f) => path.join(dir, f));
  fs.writeFileSync(conf, config);
  const proc = lab.spawn(ns, ['bird', '-f', '-c', conf, '-s', socket, '-P', pid]);
  const birdc = (...command: string[]) => ns.run('birdc', '-s', socket, ...command);
  const deadline = Date.now() + 5000;
  while (!ns.tryRun('birdc', '-s', socket, 'show', 'status').ok) {
    if (proc.child.exitCode !== null || Date.now() > deadline) {
      await proc.stop('SIGKILL');
      throw new Error(`BIRD in ${ns.name} did not start (is bird2 installed? apt-get install bird2): ${proc.stderr().trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, socket, birdc };
}

/**
 * The environment relay-vip.sh reads, for a host's BIRD and its own state
 * directory: healthz is relay's /healthz URL, or '' to follow its listener on port.
 */
export function relayVipEnv(lab: Lab, bird: Bird, port: number, healthz: string): NodeJS.ProcessEnv {
  return {
    RELAY_VIP_HEALTHZ: healthz,
    RELAY_VIP_PORT: String(port),
    RELAY_VIP_BIRD_SOCKET: bird.socket,
    RELAY_VIP_STATE: fs.mkdtempSync(path.join(lab.dir, 'relay-vip-')),
  };
}

export function relayVipScript(): string {
  return path.join(examplesDir(), 'relay-vip.sh');
}

/** The next hops of ns's kernel route to prefix (none when there is no route). */
export function nextHops(ns: Namespace, prefix: string): string[] {
  const family = prefix.includes(':') ? '-6' : '-4';
  const out = ns.tryRun('ip', '-j', family, 'route', 'show', prefix).stdout;
  const routes = JSON.parse(out || '[]') as { gateway?: string; nexthops?: { gateway: string }[] }[];
  return routes.flatMap((r) => (r.nexthops ? r.nexthops.map((h) => h.gateway) : r.gateway ? [r.gateway] : [])).sort();
}
