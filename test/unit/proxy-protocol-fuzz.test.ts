// Property tests of the PROXY header parser: random and mutated headers never
// make it throw, never make it read past the bytes it is given, and never make
// it wait (incomplete) beyond each version's bound. PP_FUZZ_RUNS raises the count.
import t from 'tap';
import fc from 'fast-check';
import { parseProxyHeader, writeProxyHeader, writeLocalHeader, V1_MAX_LENGTH, V2_DEFAULT_MAX_LENGTH,
  type ProxyVersionMode, type ProxyParseResult } from '../../src/proxy-protocol';

/** Random and mutated inputs per run (issue 14: at least 100,000); valid headers get half as many more. */
const RUNS = Number(process.env.PP_FUZZ_RUNS ?? 100_000);

const address4 = fc.ipV4().map((address) => address);
const address6 = fc.ipV6().filter((a) => !a.includes('.'));
const port = fc.integer({ min: 0, max: 65535 });
const endpoint = (addr: fc.Arbitrary<string>) => fc.record({ address: addr, port });

/** Valid headers as relay and HAProxy write them. */
const validHeader = fc.oneof(
  fc.tuple(fc.constantFrom('v1' as const, 'v2' as const), fc.constantFrom('stream' as const, 'dgram' as const),
    fc.oneof(fc.tuple(endpoint(address4), endpoint(address4)), fc.tuple(endpoint(address6), endpoint(address6))))
    .map(([version, transport, [src, dst]]) => writeProxyHeader(version, transport, src, dst)),
  fc.constant(writeLocalHeader()),
  fc.constant(Buffer.from('PROXY UNKNOWN\r\n')),
);

/** A valid header with bytes flipped, cut, duplicated or inserted, then a payload. */
const mutated = fc.tuple(validHeader,
  fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'delete')), { maxLength: 4 }),
  fc.nat({ max: 200 }), fc.uint8Array({ maxLength: 32 }))
  .map(([header, edits, cut, payload]) => {
    const bytes = [...header];
    for (const [at, value, op] of edits) {
      const i = at % (bytes.length + 1);
      if (op === 'set') bytes[i % bytes.length] = value;
      else if (op === 'insert') bytes.splice(i, 0, value);
      else bytes.splice(i, 1);
    }
    const body = Uint8Array.from(bytes.slice(0, Math.max(0, bytes.length - (cut % 3 === 0 ? cut % bytes.length : 0))));
    return Buffer.concat([body, payload]);
  });

/** Random bytes behind each signature, so the parser goes past its first check. */
const randomAfterSignature = fc.tuple(fc.constantFrom(Buffer.from('PROXY '), writeLocalHeader().subarray(0, 12)),
  fc.uint8Array({ maxLength: 300 })).map(([sig, rest]) => Buffer.concat([sig, rest]));

const anyInput = fc.oneof(mutated, randomAfterSignature, fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)));
const mode = fc.constantFrom<ProxyVersionMode>('v1', 'v2', 'any');

/** buf inside a larger buffer whose next bytes differ: a read past buf would change the result. */
function parseWithin(buf: Buffer, m: ProxyVersionMode, filler: number): ProxyParseResult {
  const backing = Buffer.alloc(buf.length + 64, filler);
  buf.copy(backing);
  return parseProxyHeader(backing.subarray(0, buf.length), m);
}

/**
 * buf behind a guard that throws on a read of an index at or past its end:
 * what parseWithin cannot see (a read past the end that happens not to change
 * the result) fails here.
 */
function guarded(buf: Buffer): Uint8Array {
  return new Proxy(buf, {
    get(target, key) {
      if (typeof key === 'string' && /^\d+$/.test(key) && Number(key) >= target.length) {
        throw new RangeError(`read of byte ${key} of ${target.length}`);
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

t.test(`${RUNS} random and mutated headers, ${RUNS / 2} valid ones: typed result, bounded, no read past the end`, async (t) => {
  let ok = 0;
  fc.assert(fc.property(anyInput, mode, (buf, m) => {
    const a = parseWithin(buf, m, 0x0d);
    const b = parseWithin(buf, m, 0x0a);
    if (JSON.stringify(a) !== JSON.stringify(b)) return false;
    if (JSON.stringify(parseProxyHeader(guarded(buf), m)) !== JSON.stringify(a)) return false;
    if (a.status === 'ok') {
      ok++;
      return a.length > 0 && a.length <= buf.length;
    }
    if (a.status === 'incomplete') return buf.length < Math.max(V1_MAX_LENGTH, V2_DEFAULT_MAX_LENGTH);
    return typeof a.problem === 'string';
  }), { numRuns: RUNS });
  // Valid headers with the bytes that come after them: the header and its length always come back.
  fc.assert(fc.property(validHeader, fc.uint8Array({ maxLength: 64 }), (header, payload) => {
    const r = parseProxyHeader(Buffer.concat([header, payload]), 'any');
    return r.status === 'ok' && r.length === header.length;
  }), { numRuns: RUNS / 2 });
  t.ok(ok > 0, `some mutated headers still parse (${ok})`);
});

t.test('each prefix of a valid header is incomplete, never invalid', async (t) => {
  fc.assert(fc.property(validHeader, (header) => {
    for (let n = 1; n < header.length; n++) {
      if (parseProxyHeader(header.subarray(0, n), 'any').status !== 'incomplete') return false;
    }
    return true;
  }), { numRuns: 2_000 });
  t.pass();
});
