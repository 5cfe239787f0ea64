// What relay refuses at start before anything loads: a platform its struct
// layouts were not written for, and Node's permission model. One line each.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { platformProblem, type PlatformFacts } from '../../src/sys/platform';
import { describeError } from '../../src/errors';
import { cliPath } from '../../src/lab/topology';

const linuxX64: PlatformFacts = { platform: 'linux', arch: 'x64', endianness: 'LE', permissionModel: false };

t.test('64-bit little-endian Linux passes', async (t) => {
  t.equal(platformProblem(linuxX64), undefined);
  t.equal(platformProblem({ ...linuxX64, arch: 'arm64' }), undefined);
});

t.test('anything else is one line naming what this is', async (t) => {
  const cases: [Partial<PlatformFacts>, RegExp][] = [
    [{ arch: 's390x', endianness: 'BE' }, /laid out for 64-bit little-endian Linux, and this is linux s390x, big-endian \(run relay on x64 or arm64\)$/],
    [{ arch: 'ia32' }, /and this is linux ia32, little-endian/],
    [{ arch: 'arm' }, /and this is linux arm, little-endian/],
    [{ platform: 'darwin', arch: 'arm64' }, /^relay runs on Linux only \(this is darwin arm64, little-endian\)/],
  ];
  for (const [facts, line] of cases) {
    const problem = platformProblem({ ...linuxX64, ...facts });
    t.equal(problem?.code, 'ERR_PLATFORM');
    t.match(describeError(problem), line);
    t.notMatch(describeError(problem), /\n/);
  }
});

t.test('the permission model: one line saying relay needs process.binding, which no flag grants', async (t) => {
  const problem = platformProblem({ ...linuxX64, permissionModel: true });
  t.equal(problem?.code, 'ERR_PERMISSION_MODEL');
  t.match(describeError(problem), /cannot run under Node\.js's permission model .*process\.binding .*no --allow-\* flag grants/);
});

t.test('relay under node --permission exits 1 with that line', async (t) => {
  const major = Number(process.versions.node.split('.')[0]);
  const flag = major >= 22 ? '--permission' : '--experimental-permission';
  // Through env -u: tap adds its hooks to child processes in NODE_OPTIONS, and they call process.binding too.
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', process.execPath, flag, '--allow-fs-read=*', cliPath(),
    '--listen', '127.0.0.1:5300', '--backend', '192.0.2.10:53'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 1, r.stderr);
  const lines = r.stderr.split('\n').filter((line) => line.startsWith('relay: '));
  t.equal(lines.length, 1, `one relay: line in ${JSON.stringify(r.stderr)}`);
  t.match(lines[0], /^relay: relay cannot run under Node\.js's permission model \(v[\d.]+\): it needs process\.binding/);
});
