// A network-namespace lab: namespaces, veth links between them, and the
// processes that run inside them. Used by the demo, the integration tests and
// the benchmark. Nothing here touches the host's own namespace: veth pairs are
// created directly inside the lab's namespaces.
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCommand, tryCommand } from '../shell';

/**
 * Prefix for every command run in a lab namespace. A test runner may hook
 * child processes through NODE_OPTIONS (tap adds its process-info loader),
 * which a relay under test must not inherit: it changes what runs, and an
 * unprivileged child cannot write the runner's files.
 */
export const IN_NAMESPACE_ENV = ['env', '-u', 'NODE_OPTIONS'];

export class Namespace {
  constructor(readonly name: string) {}

  /** Run a command inside; throws with its stderr on failure. */
  run(...argv: string[]): string {
    return runCommand(['ip', 'netns', 'exec', this.name, ...IN_NAMESPACE_ENV, ...argv], undefined, 'ERR_LAB');
  }

  tryRun(...argv: string[]) {
    return tryCommand(['ip', 'netns', 'exec', this.name, ...IN_NAMESPACE_ENV, ...argv]);
  }

  ip(...args: string[]): string {
    return runCommand(['ip', '-n', this.name, ...args], undefined, 'ERR_LAB');
  }
}

export interface SpawnedProcess {
  readonly child: ChildProcess;
  /** Everything written to stdout so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout (or stderr) matches, rejects after timeoutMs or if the process exits first. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Wait for the process to exit on its own; rejects after timeoutMs. */
  exited(timeoutMs: number): Promise<number | null>;
}

export class Lab {
  readonly namespaces: Namespace[] = [];
  readonly processes: SpawnedProcess[] = [];
  readonly dir: string;

  /** prefix must be unique per concurrently running lab (tap runs files in parallel). */
  constructor(readonly prefix: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  }

  addNamespace(role: string): Namespace {
    const ns = new Namespace(`${this.prefix}-${role}`);
    tryCommand(['ip', 'netns', 'del', ns.name]); // a leftover from a killed run
    runCommand(['ip', 'netns', 'add', ns.name], undefined, 'ERR_LAB');
    this.namespaces.push(ns);
    ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** A veth pair between two namespaces, created inside them, both ends up. */
  link(a: Namespace, aName: string, b: Namespace, bName: string): void {
    a.ip('link', 'add', aName, 'type', 'veth', 'peer', 'name', bName, 'netns', b.name);
    for (const [ns, name] of [[a, aName], [b, bName]] as const) {
      // Without this the link-local address stays tentative for a second or
      // two, and the first IPv6 neighbour lookups wait for it: first packets
      // would take 1-2 s in a new lab.
      ns.run('sysctl', '-qw', `net.ipv6.conf.${name}.accept_dad=0`);
      ns.ip('link', 'set', name, 'up');
    }
  }

  spawn(ns: Namespace, argv: string[], env: NodeJS.ProcessEnv = {}): SpawnedProcess {
    const child = spawn('ip', ['netns', 'exec', ns.name, ...IN_NAMESPACE_ENV, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    const proc = wrapProcess(child);
    this.processes.push(proc);
    return proc;
  }

  async teardown(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.stop('SIGKILL')));
    for (const ns of this.namespaces.reverse()) {
      // Kill anything still inside (a daemon that forked) before deleting.
      tryCommand(['ip', 'netns', 'pids', ns.name]).stdout.split(/\s+/).filter(Boolean)
        .forEach((pid) => { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ } });
      tryCommand(['ip', 'netns', 'del', ns.name]);
    }
    this.namespaces.length = 0;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function wrapProcess(child: ChildProcess): SpawnedProcess {
  let out = '';
  let err = '';
  let exitCode: number | null | undefined;
  // 'exit' can come before the last of stdout is read: wait for 'close' too,
  // briefly, since a grandchild that inherited the pipes may hold them open.
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code, signal) => {
    exitCode = code ?? (signal ? 128 : null);
    const code_ = exitCode;
    const timer = setTimeout(() => resolve(code_), 500);
    void closed.then(() => {
      clearTimeout(timer);
      resolve(code_);
    });
  }));
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { err += d; });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitFor(pattern, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const deadline = Date.now() + timeoutMs;
        const poll = () => {
          const match = pattern.exec(out) ?? pattern.exec(err);
          if (match) return resolve(match[0]);
          if (exitCode !== undefined) {
            return reject(new Error(`process exited (${exitCode}) before ${pattern}: ${err.trim() || out.trim()}`));
          }
          if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${pattern}: ${err.trim()}`));
          setTimeout(poll, 20);
        };
        poll();
      });
    },
    exited(timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`process still running after ${timeoutMs} ms`)), timeoutMs);
        void exited.then((code) => { clearTimeout(timer); resolve(code); });
      });
    },
    async stop(signal = 'SIGTERM') {
      if (exitCode !== undefined) return exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

/** Poll until something listens on the port inside ns, at most timeoutMs. */
export async function waitForListener(ns: Namespace, proto: 'tcp' | 'udp', port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const flag = proto === 'tcp' ? '-Hltn' : '-Hlun';
  while (Date.now() < deadline) {
    if (ns.tryRun('ss', flag, `sport = :${port}`).stdout.trim() !== '') return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listens on ${proto}/${port} in ${ns.name} after ${timeoutMs} ms`);
}
