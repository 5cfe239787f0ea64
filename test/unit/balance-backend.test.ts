import t from 'tap';
import { ConfigError } from '../../src/errors';
import { parseEndpoint } from '../../src/addr';
import { MAX_WEIGHT, backendName, parseAlgorithm, parseBackend, weightedBackend } from '../../src/balance/index';

t.test('ADDR:PORT with an optional weight', async (t) => {
  t.same(parseBackend('198.51.100.20:80'), { endpoint: parseEndpoint('198.51.100.20:80'), weight: 1 });
  t.same(parseBackend('198.51.100.20:80,weight=3').weight, 3);
  const v6 = parseBackend('[2001:DB8:0::20]:80,weight=2');
  t.same(v6, { endpoint: { address: '2001:db8::20', port: 80, family: 6 }, weight: 2 });
  t.equal(backendName(v6.endpoint), '[2001:db8::20]:80', 'names use the normalized address');
  t.equal(parseBackend(`198.51.100.20:80,weight=${MAX_WEIGHT}`).weight, MAX_WEIGHT);
  t.ok(Object.isFrozen(v6));
});

t.test('bad values are ConfigErrors that say what is wrong', async (t) => {
  const cases: [string, RegExp][] = [
    ['backend.example:80', /'backend\.example' is not an IP address/],
    ['198.51.100.20', /must be ADDR:PORT/],
    ['2001:db8::20:80', /must be ADDR:PORT, with IPv6 in brackets/],
    ['198.51.100.20:0', /port must be 1-65535/],
    ['198.51.100.20:80,weight=0', /weight must be an integer 1-256: got '0'/],
    [`198.51.100.20:80,weight=${MAX_WEIGHT + 1}`, /weight must be an integer 1-256/],
    ['198.51.100.20:80,weight=1.5', /weight must be an integer/],
    ['198.51.100.20:80,weight=0x10', /weight must be an integer/],
    ['198.51.100.20:80,weight= 2', /weight must be an integer/],
    ['198.51.100.20:80,weight=', /weight must be an integer 1-256: got ''/],
    ['198.51.100.20:80,weight=2,weight=3', /weight given twice/],
    ['198.51.100.20:80,Weight=2', /unknown option 'Weight=2' \(the only option is weight=N\)/],
    ['198.51.100.20:80,', /unknown option ''/],
  ];
  for (const [text, message] of cases) {
    t.throws(() => parseBackend(text), { name: 'ConfigError', message }, text);
  }
});

t.test('weightedBackend checks the weight too', async (t) => {
  const endpoint = parseEndpoint('198.51.100.20:80');
  t.equal(weightedBackend(endpoint).weight, 1, 'default weight');
  t.throws(() => weightedBackend(endpoint, 0), ConfigError);
  t.throws(() => weightedBackend(endpoint, 2.5), /198\.51\.100\.20:80: weight must be an integer/);
});

t.test('algorithm names', async (t) => {
  for (const name of ['roundrobin', 'leastconn', 'source', 'maglev']) t.equal(parseAlgorithm(name), name);
  t.throws(() => parseAlgorithm('round-robin'), {
    name: 'ConfigError',
    message: "balance algorithm must be one of roundrobin, leastconn, source, maglev: got 'round-robin'",
  });
});
