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

// LogDestination: bounded while stdout stalls, never retrying a failed write
// in a loop, and one line later saying how many lines were dropped.
import { LogDestination } from '../../src/log';

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code });
}

/** A stdout that takes writes while open, answers EAGAIN while stalled, or fails with code. */
function fakeStdout() {
  const out = { written: '', state: 'open' as 'open' | 'stalled' | string, calls: 0, reports: [] as string[] };
  const writeSync = (_fd: number, data: Buffer): number => {
    out.calls++;
    if (out.state === 'stalled') throw errno('EAGAIN');
    if (out.state !== 'open') throw errno(out.state);
    out.written += data.toString();
    return data.length;
  };
  return { out, writeSync, report: (line: string) => { out.reports.push(line); } };
}

t.test('a stalled stdout: lines wait up to the bound, the rest are dropped, counted and reported later', async (t) => {
  const { out, writeSync, report } = fakeStdout();
  const destination = new LogDestination(1, 100, 40, writeSync, report);
  out.state = 'stalled';
  for (let i = 0; i < 20; i++) destination.write(`{"n":${String(i).padStart(3, ' ')}}\n`); // 10 bytes each
  destination.flush();
  t.equal(destination.dropped, 10, 'beyond 100 bytes, 10 of 20 lines were dropped');
  t.ok(out.calls <= 3, `stalled stdout was tried ${out.calls} times, not once per line`);
  out.state = 'open';
  destination.flush();
  destination.flush();
  const lines = out.written.trim().split('\n').map((l) => JSON.parse(l));
  t.same(lines.filter((l) => l.n !== undefined).map((l) => l.n), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'the first ten, in order');
  const dropped = lines.find((l) => l.dropped !== undefined);
  t.equal(dropped?.dropped, 10, 'one line says how many were dropped');
  t.equal(out.reports.length, 0, 'EAGAIN is slowness, not a failure: nothing on stderr');
});

t.test('a failing stdout (full disk): the batch is dropped, stderr says so once, nothing blocks', async (t) => {
  const { out, writeSync, report } = fakeStdout();
  const destination = new LogDestination(1, 1000, 1000, writeSync, report);
  out.state = 'ENOSPC';
  for (let i = 0; i < 5; i++) {
    destination.write('{"a":1}\n');
    destination.flush();
  }
  t.equal(destination.dropped, 5);
  t.equal(out.calls, 5, 'one write per flush, no retry loop');
  t.equal(out.reports.length, 1, 'one line on stderr');
  t.match(out.reports[0], /ENOSPC/);
  out.state = 'open';
  destination.write('{"b":2}\n');
  destination.flush();
  t.match(out.written, /"dropped":5/, 'the count reaches stdout once it works again');
  t.match(out.written, /"b":2/);
});

t.test('at exit, a slow stdout is waited for, so no line is left cut in half', async (t) => {
  const { out, report } = fakeStdout();
  // A pipe with room for 25 bytes at a time: a short write, then EAGAIN until the reader catches up.
  let room = 25;
  const writeSync = (_fd: number, data: Buffer): number => {
    if (room === 0) throw errno('EAGAIN');
    const n = Math.min(room, data.length);
    room -= n;
    out.written += data.subarray(0, n).toString();
    return n;
  };
  const destination = new LogDestination(1, 1000, 1000, writeSync, report);
  for (let i = 0; i < 6; i++) destination.write(`{"msg":"line ${i}"}\n`);
  destination.flush();
  t.notOk(out.written.endsWith('\n'), 'a short write left a line cut');
  let sleeps = 0;
  destination.drainBeforeExit(1000, () => {
    sleeps++;
    room = 25; // the reader drains the pipe
  });
  t.ok(sleeps > 0, 'it waited for stdout');
  t.same(out.written.trim().split('\n').map((l) => JSON.parse(l).msg), [0, 1, 2, 3, 4, 5].map((i) => `line ${i}`),
    'every line whole, in order');
});

t.test('at exit, a stdout that never drains is given up on at the deadline', async (t) => {
  const { out, writeSync, report } = fakeStdout();
  const destination = new LogDestination(1, 1000, 1000, writeSync, report);
  out.state = 'stalled';
  destination.write('{"a":1}\n');
  const started = Date.now();
  destination.drainBeforeExit(50);
  t.ok(Date.now() - started < 1000, 'bounded in time');
});
