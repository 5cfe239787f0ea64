import t from 'tap';
import * as dgram from 'node:dgram';
import { constants } from 'node:os';
import { SysError } from '../../src/errors';
import { bindTo } from '../../src/sys/transparent';
import { libc } from '../../src/sys/libc';
import * as C from '../../src/sys/constants';

// Node 24's V8 changed errno between a failed call and koffi.errno() about
// once in 200,000 binds while it compiled (CI saw `bind ENOENT`, and the raw
// engine, which moves to its next slot on EADDRINUSE alone, did not start).
t.test('a failed call reports its own errno, every time, while V8 compiles around it', async (t) => {
  const holder = dgram.createSocket('udp4');
  t.teardown(() => holder.close());
  await new Promise<void>((resolve) => holder.bind(0, '127.0.0.1', resolve));
  const { port } = holder.address();
  const codes = new Map<string, number>();
  for (let i = 0; i < 200_000; i++) {
    const fd = libc().socket(C.AF_INET, C.SOCK_DGRAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0);
    try {
      bindTo(fd, '127.0.0.1', port);
      codes.set('bound', (codes.get('bound') ?? 0) + 1);
    } catch (err) {
      const code = err instanceof SysError ? err.code : String(err);
      codes.set(code, (codes.get(code) ?? 0) + 1);
    } finally {
      libc().close(fd);
    }
  }
  t.same(Object.fromEntries(codes), { EADDRINUSE: 200_000 });
});

t.test('a successful call after a failed one leaves the failure\'s errno', async (t) => {
  t.equal(libc().close(-1), -1);
  t.equal(libc().errno(), constants.errno.EBADF);
  const fd = libc().socket(C.AF_INET, C.SOCK_DGRAM | C.SOCK_CLOEXEC, 0);
  t.ok(fd >= 0);
  t.equal(libc().close(fd), 0);
  t.equal(libc().errno(), constants.errno.EBADF);
});
