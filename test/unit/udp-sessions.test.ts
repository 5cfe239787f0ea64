import t from 'tap';
import { SessionTable, SessionEnd, sessionKey } from '../../protocols/udp-sessions';

interface Fake { id: string }

function table(maxSessions: number, idleTimeoutMs = 60_000) {
  const ended: [string, SessionEnd][] = [];
  const sessions = new SessionTable<Fake>({ maxSessions, idleTimeoutMs, onEnd: (s, why) => ended.push([s.id, why]) });
  return { sessions, ended };
}

t.test('evicts the least recently used past maxSessions, once each', async (t) => {
  const { sessions, ended } = table(2);
  sessions.add('a', { id: 'a' });
  sessions.add('b', { id: 'b' });
  sessions.get('a'); // a is now more recent than b
  sessions.add('c', { id: 'c' });
  t.same(ended, [['b', 'evicted']]);
  t.equal(sessions.size, 2);
  t.ok(sessions.get('a'));
  t.notOk(sessions.get('b'));
  sessions.clear();
});

t.test('end() reports the reason given', async (t) => {
  const { sessions, ended } = table(10);
  sessions.add('a', { id: 'a' });
  sessions.add('b', { id: 'b' });
  sessions.end('a', 'responses');
  sessions.end('b', 'refused');
  sessions.end('b', 'refused'); // already gone: nothing more
  t.same(ended, [['a', 'responses'], ['b', 'refused']]);
  sessions.clear();
});

t.test('idle sessions expire, and the sweep ends them without any lookup', async (t) => {
  const { sessions, ended } = table(10, 100);
  sessions.add('quiet', { id: 'quiet' });
  sessions.add('busy', { id: 'busy' });
  const until = Date.now() + 400;
  while (Date.now() < until) {
    sessions.get('busy'); // traffic refreshes it
    await new Promise((r) => setTimeout(r, 30));
  }
  t.same(ended, [['quiet', 'idle']], 'only the quiet one expired, found by the sweep');
  t.ok(sessions.get('busy'));
  sessions.clear();
  t.same(ended.at(-1), ['busy', 'shutdown']);
});

t.test('10,000 sessions through a table of 1,000 stay bounded', async (t) => {
  const { sessions, ended } = table(1000);
  for (let i = 0; i < 10_000; i++) sessions.add(`k${i}`, { id: `k${i}` });
  t.equal(sessions.size, 1000);
  t.equal(ended.length, 9000);
  t.ok(ended.every(([, why]) => why === 'evicted'));
  sessions.clear();
});

t.test('keys separate listener address and port, client address and port', async (t) => {
  t.not(sessionKey('192.0.2.1', 53, '192.0.2.2', 53), sessionKey('192.0.2.1', 53, '192.0.2.2', 54));
  t.not(sessionKey('192.0.2.1', 53, '192.0.2.2', 53), sessionKey('192.0.2.9', 53, '192.0.2.2', 53));
  t.not(sessionKey('192.0.2.1', 53, '192.0.2.2', 53), sessionKey('192.0.2.1', 54, '192.0.2.2', 53));
  t.not(sessionKey('2001:db8::1', 53, '2001:db8::2', 53), sessionKey('2001:db8::1', 53, '2001:db8::2:53', 0));
});

t.test("endWhere() ends only the matching sessions, each once, with the reason given", async (t) => {
  const { sessions, ended } = table(10);
  for (const id of ['a1', 'b1', 'a2']) sessions.add(id, { id });
  t.equal(sessions.endWhere((s) => s.id.startsWith('a'), 'address-removed'), 2);
  t.same([...ended].sort(), [['a1', 'address-removed'], ['a2', 'address-removed']]);
  t.ok(sessions.get('b1'), 'the others stay');
  sessions.clear();
});
