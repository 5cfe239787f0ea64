// What the benchmark reads from /proc: a process's CPU time, resident memory
// and open fds, and the host's per-CPU busy time. Synchronous and cheap: these
// are read only at the edges of a measured window, never during it.
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';

/** Clock ticks per second, the unit of utime/stime in /proc/PID/stat. */
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/**
 * The fields of /proc/PID/stat after "(comm)": comm may hold spaces and
 * parentheses, so split after the last ')'. Index 0 is field 3 (state).
 */
function statFields(pid: number): string[] {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of one process (all its threads), in seconds; 0 if it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const f = statFields(pid);
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15
  } catch {
    return 0;
  }
}

export function totalCpuSeconds(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

/** VmRSS in KiB. */
export function rssKiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

export function totalRssKiB(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + rssKiB(pid), 0);
}

export function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The executable a pid runs, e.g. to check that `ip netns exec` really exec'd into node. */
export function exePath(pid: number): string {
  return fs.readlinkSync(`/proc/${pid}/exe`);
}

/** All processes below pid (nginx workers under their master), found by their parent pid. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(statFields(Number(entry))[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch { /* exited while we looked */ }
  }
  const found: number[] = [];
  const walk = (p: number) => (children.get(p) ?? []).forEach((c) => { found.push(c); walk(c); });
  walk(pid);
  return found;
}

/** Busy and total jiffies of each CPU since boot (iowait counts as idle). */
export interface CpuTimes {
  busy: number;
  total: number;
}

export function hostCpuTimes(): CpuTimes[] {
  return fs.readFileSync('/proc/stat', 'utf8').split('\n')
    .filter((line) => /^cpu\d+ /.test(line))
    .map((line) => {
      const v = line.split(/\s+/).slice(1).map(Number);
      const idle = v[3] + v[4];
      const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal; guest is inside user
      return { busy: total - idle, total };
    });
}

/** Per-CPU busy fraction (0..1) between two readings. */
export function busyFractions(before: CpuTimes[], after: CpuTimes[]): number[] {
  return after.map((a, i) => {
    const total = a.total - before[i].total;
    return total > 0 ? (a.busy - before[i].busy) / total : 0;
  });
}

/** "net:[4026531840]": the network namespace a process is in. */
export function netnsOf(pid: number): string {
  return fs.readlinkSync(`/proc/${pid}/ns/net`);
}

/** The same identifier for a named namespace (ip netns add NAME). */
export function namedNetns(name: string): string {
  return `net:[${fs.statSync(`/run/netns/${name}`).ino}]`;
}

const PF_KTHREAD = 0x00200000;

export interface ProcessCpu {
  seconds: number;
  netns: string;
  kernelThread: boolean;
}

/** CPU time of every process on the host, with its network namespace: to see who else used the CPUs. */
export function processCpuSnapshot(): Map<number, ProcessCpu> {
  const snapshot = new Map<number, ProcessCpu>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      const f = statFields(pid);
      const kernelThread = (Number(f[6]) & PF_KTHREAD) !== 0; // field 9, flags
      snapshot.set(pid, {
        seconds: (Number(f[11]) + Number(f[12])) / CLK_TCK,
        netns: kernelThread ? '' : netnsOf(pid),
        kernelThread,
      });
    } catch { /* exited while we looked */ }
  }
  return snapshot;
}

/**
 * CPU seconds used between two snapshots by user processes outside `ours`
 * (namespace ids) other than `except`: other jobs sharing the machine.
 * A process that started in between counts in full; one that ended is missed.
 */
export function foreignCpuSeconds(before: Map<number, ProcessCpu>, after: Map<number, ProcessCpu>,
  ours: ReadonlySet<string>, except: number): number {
  let total = 0;
  for (const [pid, p] of after) {
    if (p.kernelThread || pid === except || ours.has(p.netns)) continue;
    total += p.seconds - (before.get(pid)?.seconds ?? 0);
  }
  return total;
}
