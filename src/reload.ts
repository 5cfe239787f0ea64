// `relay reload`: find the running relay by its pid file and send it SIGHUP,
// as `nginx -s reload` does. The pid is checked to be a relay first: a stale
// file must not make relay signal some unrelated process that got the pid.
import * as fs from 'node:fs';
import { RelayError } from './errors';

/** Send SIGHUP to the relay pidFile names; returns its pid. Throws with what to do when it cannot. */
export function signalRelay(pidFile: string): number {
  const pid = readPid(pidFile);
  if (!isRelay(pid)) {
    throw new RelayError('ERR_RELOAD', `${pidFile} names pid ${pid}, which is not a running relay (a stale pid file?)`,
      'start relay with --config, or give --pid-file where it writes its pid');
  }
  try {
    process.kill(pid, 'SIGHUP');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new RelayError('ERR_RELOAD', `cannot signal relay (pid ${pid}): ${code}`,
      code === 'EPERM' ? 'run relay reload as the user relay runs as, or as root' : undefined);
  }
  return pid;
}

function readPid(pidFile: string): number {
  let text: string;
  try {
    text = fs.readFileSync(pidFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new RelayError('ERR_RELOAD', `cannot read the pid file ${pidFile} (${code})`,
      code === 'ENOENT' ? 'is relay running with --config? give --pid-file or --config to say where it writes its pid' : undefined);
  }
  const pid = Number(text.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) throw new RelayError('ERR_RELOAD', `${pidFile} does not hold a pid: '${text.trim().slice(0, 40)}'`);
  return pid;
}

/** Whether pid runs relay: its command line names relay's entry point or the relay command. */
function isRelay(pid: number): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((arg) => /(^|\/)(cli\.js|relay)$/.test(arg));
  } catch {
    return false;
  }
}
