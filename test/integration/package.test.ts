// The package as npm would publish it: `npm pack` ships only what runs (no
// tests, no bench, no source maps), and the tarball installs into an empty
// prefix (its dependencies from the npm registry) and runs `relay --help`.
// .ci/run also runs `relay demo` from such an install. No root needed.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';

const root = path.resolve(__dirname, '../..');
const npm = (args: string[], cwd: string) =>
  execFileSync('npm', args, { cwd, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });

t.test('npm pack installs and runs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-pack-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // --ignore-scripts: prepare would rebuild dist/ under the feet of the test files running beside this one.
  const packed = JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir], root))[0];
  const files: string[] = packed.files.map((f: { path: string }) => f.path);
  t.ok(files.includes('dist/src/cli.js'), 'the CLI is in');
  t.ok(files.includes('dist/protocols/tcp.js') && files.includes('dist/src/admin/server.js'), 'the data paths and the admin API are in');
  t.ok(files.includes('docs/operations.md'), 'the docs are in');
  t.same(files.filter((f) => /(^|\/)test\/|\.map$|\.ts$/.test(f)), [], 'no tests (nor the bench, under test/), no sources or maps');
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  t.notOk(manifest.private, 'package.json is not private');
  t.equal(packed.name, 'transparent-l4-relay');

  const prefix = path.join(dir, 'prefix');
  npm(['install', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', path.join(dir, packed.filename)], dir);
  const bin = path.join(prefix, 'node_modules', '.bin', 'relay');
  const help = execFileSync(bin, ['--help'], { encoding: 'utf8', timeout: 20_000 });
  t.match(help, /^usage: relay /, 'relay --help runs from the installed package');
  t.match(help, /--admin ADDR:PORT\|PATH/, 'and lists --admin');
  t.match(execFileSync(bin, ['demo', '--help'], { encoding: 'utf8', timeout: 20_000 }), /usage: relay demo/);
});
