// Doctor's printed form: OK / WARN / FAIL, fix lines only under WARN and
// FAIL, alternatives labelled, and the exit verdict (only a FAIL fails). No root.
import t from 'tap';
import { formatResults, anyFailed, CheckResult } from '../../src/doctor';

const results: CheckResult[] = [
  { name: 'a', status: 'ok', detail: 'fine', fix: ['never printed'] },
  { name: 'b', status: 'warn', detail: 'partial', fix: ['# one of:', '(a) ip -4 rule add from 198.51.100.21 lookup 60', '(b) relay routes apply'] },
  { name: 'c', status: 'fail', detail: 'broken', fix: ['relay routes apply'] },
];

t.test('each status, its fixes, alternatives as alternatives', async (t) => {
  t.equal(formatResults(results), [
    'OK    a: fine',
    'WARN  b: partial',
    '           # one of:',
    '  fix (a): ip -4 rule add from 198.51.100.21 lookup 60',
    '  fix (b): relay routes apply',
    'FAIL  c: broken',
    '      fix: relay routes apply',
    '1 of 3 checks failed, 1 with a warning',
    '',
  ].join('\n'));
});

t.test('only a FAIL fails: WARNs pass, and the summary says so', async (t) => {
  t.equal(anyFailed(results), true);
  const warned = results.slice(0, 2);
  t.equal(anyFailed(warned), false);
  t.match(formatResults(warned), /all 2 checks passed, 1 with a warning\n$/);
  t.match(formatResults(results.slice(0, 1)), /all 1 checks passed\n$/);
});
