// README.md's and docs/quickstart.md's commands, run as written in a
// namespace lab. Every fenced block in those files must follow a marker
// comment (a block without one fails the test: none is left out silently):
//
//   <!-- lab: ROLE -->                   run it with bash -e on host ROLE (relay, backend or client)
//   <!-- lab: ROLE, background, ready: TEXT -->
//                                        start it and go on once its output shows TEXT (a server)
//   ..., expect: TEXT                    its output must show TEXT (for a background block: by the end);
//                                        repeatable
//   <!-- lab: skip: REASON -->           not run, for REASON (output, installs, the test suite itself)
//
// `relay` is the CLI built in dist/, through a shim on PATH. What the lab
// provides that the files take as given is set up below, per file.
import t from 'tap';
import type { Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, Namespace, SpawnedProcess } from '../../src/lab/netns';
import { buildTopology, cliPath, Topology } from '../../src/lab/topology';
import { canRunLab, SKIP_REASON, toolServer, ADDR } from './lab-fixture';

const ROOT = path.resolve(__dirname, '..', '..');
const ROLES = ['relay', 'backend', 'client'] as const;
type Role = (typeof ROLES)[number];

export interface DocBlock {
  readonly line: number;
  readonly text: string;
  readonly role?: Role;
  readonly skip?: string;
  readonly background: boolean;
  readonly ready?: string;
  readonly expect: readonly string[];
}

/** The fenced blocks of a markdown file with their markers; throws on a block without one. */
export function docBlocks(file: string): DocBlock[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```/.test(lines[i])) continue;
    const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
    if (end < 0) throw new Error(`${file}:${i + 1}: a fenced block that never ends`);
    const marker = /^<!-- lab: (.*) -->$/.exec(lines[i - 1] ?? '');
    if (!marker) throw new Error(`${file}:${i + 1}: a fenced block without a <!-- lab: ... --> marker on the line before`);
    blocks.push({ line: i + 1, text: lines.slice(i + 1, end).join('\n') + '\n', ...parseMarker(marker[1], `${file}:${i}`) });
    i = end;
  }
  return blocks;
}

function parseMarker(text: string, where: string): Omit<DocBlock, 'line' | 'text'> {
  const skip = /^skip: (.+)$/.exec(text);
  if (skip) return { skip: skip[1], background: false, expect: [] };
  const [role, ...options] = text.split(/,\s*/);
  if (!ROLES.includes(role as Role)) throw new Error(`${where}: marker '${text}': the role must be one of ${ROLES.join(', ')}, or skip: REASON`);
  const valued = (name: string) => options.filter((o) => o.startsWith(`${name}: `)).map((o) => o.slice(name.length + 2));
  const unknown = options.filter((o) => o !== 'background' && !/^(ready|expect): ./.test(o));
  if (unknown.length > 0) throw new Error(`${where}: marker '${text}': unknown option '${unknown[0]}'`);
  const background = options.includes('background');
  const ready = valued('ready')[0];
  if (background !== (ready !== undefined)) throw new Error(`${where}: marker '${text}': background and ready: go together`);
  return { role: role as Role, background, ready, expect: valued('expect') };
}

/** A directory holding a `relay` that runs the CLI built in dist/. */
function relayShim(lab: Lab): string {
  const dir = path.join(lab.dir, 'bin');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'relay'), `#!/bin/sh\nexec '${process.execPath}' '${cliPath()}' "$@"\n`, { mode: 0o755 });
  return dir;
}

async function runBlocks(t: Test, file: string, topo: Topology): Promise<void> {
  const bin = relayShim(topo.lab);
  const hosts: Record<Role, Namespace> = { relay: topo.relay, backend: topo.backend, client: topo.client };
  const env = [`PATH=${bin}:${process.env.PATH}`];
  const servers: [DocBlock, SpawnedProcess][] = [];
  for (const block of docBlocks(file)) {
    const name = `${path.basename(file)}:${block.line}`;
    if (block.skip) {
      t.comment(`${name}: not run: ${block.skip}`);
      continue;
    }
    const ns = hosts[block.role!];
    if (block.background) {
      const proc = topo.lab.spawn(ns, ['env', ...env, 'bash', '-e', '-c', block.text]);
      await proc.waitFor(new RegExp(escapeRegExp(block.ready!)), 10_000)
        .then(() => t.pass(`${name} (${block.role}, background): ready`),
          (err: Error) => t.fail(`${name} (${block.role}, background): ${err.message}`));
      servers.push([block, proc]);
      continue;
    }
    const result = ns.tryRun('env', ...env, 'bash', '-e', '-o', 'pipefail', '-c', block.text);
    t.ok(result.ok, `${name} (${block.role}) exits 0${result.ok ? '' : `: ${result.stderr}`}`);
    for (const text of block.expect) t.match(result.stdout, text, `${name}: shows '${text}'`);
  }
  for (const [block, proc] of servers) {
    for (const text of block.expect) {
      await proc.waitFor(new RegExp(escapeRegExp(text)), 3000)
        .then(() => t.pass(`${path.basename(file)}:${block.line}: shows '${text}'`),
          () => t.fail(`${path.basename(file)}:${block.line}: shows '${text}': ${proc.stdout()}${proc.stderr()}`));
    }
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

t.test('every fenced block in README.md and docs/quickstart.md has a marker', async (t) => {
  for (const file of ['README.md', 'docs/quickstart.md']) {
    const blocks = docBlocks(path.join(ROOT, file));
    t.ok(blocks.some((b) => b.role !== undefined), `${file}: some blocks run`);
  }
  t.throws(() => parseMarker('gateway', 'x'), /role must be one of/, 'an unknown role is refused');
  t.throws(() => parseMarker('relay, background', 'x'), /background and ready/, 'a background block says when it is ready');
});

t.test('README.md as written', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`docrd${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  // The lab's backend routes via relay (deployment C) and serves port 25, as README's "Use" takes as given.
  const topo = buildTopology(lab);
  await toolServer(topo, 'echo', 25, [ADDR.backend4, ADDR.backend6]);
  await runBlocks(t, path.join(ROOT, 'README.md'), topo);
});

t.test('docs/quickstart.md as written', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`docqs${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  // The quickstart's hosts: relay routes nothing yet, and the backend's usual gateway is not relay.
  const topo = buildTopology(lab);
  topo.backend.ip('-4', 'route', 'del', 'default');
  topo.backend.ip('-6', 'route', 'del', 'default');
  await runBlocks(t, path.join(ROOT, 'docs/quickstart.md'), topo);
});
