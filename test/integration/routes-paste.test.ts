// `relay routes print` as an operator uses it: the relay-host part and a
// backend's recipe (a), pasted into a shell under `set -e`, twice (a second
// paste must not stop at "RTNETLINK answers: File exists"), and relaying then
// works. Two ports on one backend address give one recipe. The dedicated IPv6
// address is added with preferred_lft 0, as docs/setup.md says, so the
// backend's own traffic keeps its own source.
import t from 'tap';
import { Lab } from '../../src/lab/netns';
import { buildTopology, cliPath } from '../../src/lab/topology';
import { startToolServer } from '../../src/lab/peers';
import {
  relay, clientSession, canRunLab, SKIP_REASON, ADDR, formatEndpoint, accepts, relayLogs,
} from './lab-fixture';
import { relayPid, fdCount, settleFds } from '../torture/harness';

const DEDICATED4 = '198.51.100.30';
const DEDICATED6 = '2001:db8:51::30';

/** The relay host's commands: everything before the first blank line. */
function relayHostPart(printed: string): string {
  return printed.slice(0, printed.indexOf('\n\n') + 1);
}

/** Each backend's recipe (a): from its "(a)" line to its "(b)" line, comments dropped. */
function dedicatedRecipes(printed: string): string[] {
  return printed.split('# On backend ').slice(1).map((block) => {
    const a = block.slice(block.indexOf('# (a)'), block.indexOf('# (b)'));
    return a.split('\n').filter((l) => l !== '' && !l.startsWith('#')).join('\n') + '\n';
  });
}

t.test('routes print: pasted twice under set -e, then relaying works', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`rpaste${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const topo = buildTopology(lab);
  const { relay: relayNs, backend } = topo;
  // Deployment A: no gateway via relay; the dedicated addresses carry the relayed traffic.
  backend.ip('-4', 'route', 'del', 'default');
  backend.ip('-6', 'route', 'del', 'default');
  backend.ip('-4', 'addr', 'add', `${DEDICATED4}/24`, 'dev', 'eth0');
  backend.ip('-6', 'addr', 'add', `${DEDICATED6}/64`, 'dev', 'eth0', 'nodad', 'preferred_lft', '0');

  const printed = relayNs.run(process.execPath, cliPath(), 'routes', 'print',
    '--backend', formatEndpoint(DEDICATED4, 7700), '--backend', formatEndpoint(DEDICATED4, 7701),
    '--backend', formatEndpoint(DEDICATED6, 7700));
  const recipes = dedicatedRecipes(printed);
  t.equal(recipes.length, 2, 'one recipe per backend address (two ports on one address, one recipe)');
  t.match(recipes[0], `via ${ADDR.relayBackendSide4} table 2017`, 'the relay address looked up');

  for (const paste of [1, 2]) {
    const relayHost = relayNs.tryRun('bash', '-e', '-c', relayHostPart(printed));
    t.ok(relayHost.ok, `relay host part, paste ${paste}: ${relayHost.stderr}`);
    for (const recipe of recipes) {
      const result = backend.tryRun('bash', '-e', '-c', recipe);
      t.ok(result.ok, `backend recipe (a), paste ${paste}: ${result.stderr}`);
    }
  }
  t.ok(relayNs.tryRun(process.execPath, cliPath(), 'routes', 'check').ok, 'relay routes check passes');
  for (const [ns, family] of [[relayNs, '-4'], [relayNs, '-6'], [backend, '-4'], [backend, '-6']] as const) {
    const rules = ns.ip(family, 'rule', 'show', 'priority', '2017').trim().split('\n');
    t.equal(rules.length, 1, `one rule at priority 2017 (${ns.name} ${family}), not two: ${rules.join(' | ')}`);
  }
  // preferred_lft 0: the backend's own IPv6 traffic leaves from its own address, not the dedicated one.
  t.match(backend.ip('-6', 'route', 'get', ADDR.relayBackendSide6), `src ${ADDR.backend6}`, 'the backend keeps its own IPv6 source');

  const servers = [
    await startToolServer(lab, backend, 'echo', [formatEndpoint(DEDICATED4, 7700), formatEndpoint(DEDICATED6, 7700)], 7700),
    await startToolServer(lab, backend, 'echo', [formatEndpoint(DEDICATED4, 7701)], 7701),
  ];
  const proc = await relay(topo, ['--listen', '[::]:7710', '--backend', formatEndpoint(DEDICATED4, 7700),
    '--backend', formatEndpoint(DEDICATED4, 7701), '--backend', formatEndpoint(DEDICATED6, 7700)]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  for (const [target, n] of [[`${ADDR.relayClientSide4}:7710`, 2], [`[${ADDR.relayClientSide6}]:7710`, 1]] as const) {
    for (let i = 0; i < n; i++) {
      const out = await clientSession(topo, target, ['--send', `p${i}`, '--end']);
      t.equal(out.received, `p${i}`, `answered through ${target}`);
    }
  }
  const seen = servers.flatMap(accepts).map((a) => a.remote).sort();
  t.same(seen, [ADDR.client4, ADDR.client4, ADDR.client6].sort(), 'the backends saw the clients\' own addresses');
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, 'relay\'s fds are back where they were');
  t.same(relayLogs(proc, 'backend connect failed: client closed'), [], 'no failed connect');
});
