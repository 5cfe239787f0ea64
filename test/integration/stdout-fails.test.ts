// A serving relay whose stdout fails (a full disk) or stalls (a reader that
// stopped reading) goes on serving, says so once on stderr, and still stops at
// once on SIGTERM. Before the bounded log destination it retried the write
// about 9 times a second and ignored SIGTERM twice.
import t from 'tap';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { Lab, IN_NAMESPACE_ENV } from '../../src/lab/netns';
import { cliPath } from '../../src/lab/topology';
import { canRunLab, SKIP_REASON, eventually } from './lab-fixture';

t.test('stdout on a full disk', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`rtout${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const ns = lab.addNamespace('relay');
  const full = fs.openSync('/dev/full', 'w');
  t.teardown(() => fs.closeSync(full));
  const child = spawn('ip', ['netns', 'exec', ns.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(),
    '--listen', '127.0.0.1:18093', '--backend', '198.51.100.20:80', '--health-interval', '0'],
  { stdio: ['ignore', full, 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => { child.kill('SIGKILL'); });

  await eventually(() => ns.tryRun('ss', '-Hltn', 'sport = :18093').stdout.trim() !== '', 10_000, 'relay listening');
  await eventually(() => stderr.includes('cannot write log lines'), 5_000, 'the stderr line');
  t.match(stderr, /^relay: cannot write log lines to stdout \(ENOSPC\): dropping and counting them; still serving\n$/,
    'one line on stderr, and only one');
  for (let i = 0; i < 3; i++) child.kill('SIGUSR2'); // more lines to drop
  await new Promise((r) => setTimeout(r, 500));
  const stopAsked = Date.now();
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 3_000))]);
  t.equal(code, 0, `the first SIGTERM stops it, at once (${Date.now() - stopAsked} ms)`);
  t.equal(stderr.split('\n').filter(Boolean).length, 1, `still one line on stderr: ${stderr}`);
});
