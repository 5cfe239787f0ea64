// RateLimitedLog: a few lines per window, then one count; fields given as a
// function are built only for a line that is actually written.
import t from 'tap';
import pino from 'pino';
import { Writable } from 'node:stream';
import { RateLimitedLog } from '../../src/log';

function capture(level: pino.Level): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  return { log: pino({ level }, sink), lines };
}

t.test('at most limit lines per window, then one line with the count held back', async (t) => {
  const { log, lines } = capture('info');
  const limited = new RateLimitedLog(log, 'warn', 'flood', 2, 1000);
  let built = 0;
  for (let i = 0; i < 5; i++) limited.write(() => ({ n: ++built }), 100);
  limited.flush();
  await new Promise((resolve) => setImmediate(resolve));
  t.same(lines.map((l) => l.msg), ['flood', 'flood', 'flood (3 more not logged)']);
  t.equal(lines[2].suppressed, 3);
  t.equal(built, 2, 'fields were built for the two lines written, not for the three held back');
});

t.test('a level that is off builds nothing and writes nothing', async (t) => {
  const { log, lines } = capture('warn');
  const limited = new RateLimitedLog(log, 'info', 'evicted', 5, 1000);
  let built = 0;
  for (let i = 0; i < 10; i++) limited.write(() => ({ n: ++built }), 100);
  limited.flush();
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(built, 0);
  t.same(lines, []);
});
