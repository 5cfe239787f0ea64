// The pid file `relay reload` reads: written once relay serves, removed when
// it stops (only if it still names this process: a newer relay may own it).
import * as fs from 'node:fs';
import type { Logger } from './log';

/** Write the pid; failing to only warns (relay reload then needs the pid some other way). */
export function writePidFile(path: string, log: Logger): void {
  try {
    fs.writeFileSync(path, `${process.pid}\n`);
  } catch (err) {
    log.warn({ pidFile: path, code: (err as NodeJS.ErrnoException).code },
      'cannot write the pid file: relay reload will not find this relay (send SIGHUP to its pid instead)');
  }
}

export function removePidFile(path: string | undefined): void {
  if (!path) return;
  try {
    if (fs.readFileSync(path, 'utf8').trim() === String(process.pid)) fs.unlinkSync(path);
  } catch {
    // Gone already, or never written.
  }
}
