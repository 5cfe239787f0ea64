// Who holds a listening port: /proc/net/{tcp,tcp6,udp,udp6} give the socket's
// inode, /proc/PID/fd links name the process holding it. doctor asks when its
// trial listen fails with EADDRINUSE: beside a serving relay, the holder is
// relay itself, and the service is up rather than blocked. Another user's
// processes are visible only with CAP_SYS_PTRACE (root): then none is named.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ProcNetSocket {
  readonly port: number;
  /** The kernel's state number: 0x0A is TCP LISTEN, 0x07 an unconnected UDP socket. */
  readonly state: number;
  readonly inode: string;
}

export interface ListenerOwner {
  readonly pid: number;
  /** Its command line, arguments joined by spaces. */
  readonly command: string;
  readonly isRelay: boolean;
}

const LISTENING_STATE = { tcp: 0x0a, udp: 0x07 } as const;

/** The sockets of one /proc/net/{tcp,udp}[6] table (same layout for both families). */
export function parseProcNet(text: string): ProcNetSocket[] {
  return text.split('\n').slice(1).flatMap((line) => {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) return [];
    const port = parseInt(fields[1].split(':')[1] ?? '', 16);
    const state = parseInt(fields[3], 16);
    return Number.isNaN(port) || Number.isNaN(state) ? [] : [{ port, state, inode: fields[9] }];
  });
}

/** Whether a command line is relay serving (not relay's doctor, routes or demo). */
export function isRelayCommand(argv: readonly string[], ownScript = process.argv[1]): boolean {
  const script = argv.findIndex((a, i) => (i <= 1) && (a === ownScript || path.basename(a) === 'relay' ||
    /(^|\/)relay\/dist\/src\/cli\.js$/.test(a)));
  if (script === -1) return false;
  return !['doctor', 'routes', 'demo'].includes(argv[script + 1] ?? '');
}

export function findListenerOwners(protocol: 'tcp' | 'udp', port: number): ListenerOwner[] {
  const inodes = new Set(['', '6'].flatMap((suffix) => {
    try {
      return parseProcNet(fs.readFileSync(`/proc/net/${protocol}${suffix}`, 'utf8'));
    } catch {
      return [];
    }
  }).filter((s) => s.port === port && s.state === LISTENING_STATE[protocol] && s.inode !== '0').map((s) => `socket:[${s.inode}]`));
  if (inodes.size === 0) return [];
  return processesHolding(inodes);
}

function processesHolding(sockets: ReadonlySet<string>): ListenerOwner[] {
  const owners: ListenerOwner[] = [];
  for (const entry of safeReaddir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const holds = safeReaddir(`/proc/${pid}/fd`).some((fd) => {
      try {
        return sockets.has(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    });
    if (!holds) continue;
    const argv = readCmdline(pid);
    owners.push({ pid, command: argv.join(' '), isRelay: isRelayCommand(argv) });
  }
  return owners;
}

function readCmdline(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
  } catch {
    return [];
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
