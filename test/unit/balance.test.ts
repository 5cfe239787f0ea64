import t from 'tap';
import { roundRobin } from '../../src/balance';
import { parseEndpoint } from '../../src/addr';

const b4a = parseEndpoint('198.51.100.20:80');
const b4b = parseEndpoint('198.51.100.21:80');
const b6 = parseEndpoint('[2001:db8::20]:80');

t.test('round robin within the client family', async (t) => {
  const pick = roundRobin([b4a, b6, b4b]);
  t.same([pick(4), pick(4), pick(4), pick(4)], [b4a, b4b, b4a, b4b]);
  t.same([pick(6), pick(6)], [b6, b6]);
});

t.test('across families only when the client family has no backend', async (t) => {
  const pick = roundRobin([b4a, b4b]);
  t.same([pick(6), pick(6), pick(6)], [b4a, b4b, b4a]);
});

t.test('needs a backend', async (t) => {
  t.throws(() => roundRobin([]));
});
