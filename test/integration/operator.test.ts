// What an operator meets outside the data path: relay-host routes managed by
// relay itself, missing privilege and an address in use as one clear line.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { Lab, IN_NAMESPACE_ENV } from '../../src/lab/netns';
import { cliPath } from '../../src/lab/topology';
import { canRunLab, SKIP_REASON } from './lab-fixture';

t.test('operator-facing behaviour', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`rtop${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const ns = lab.addNamespace('relay');
  const relayCli = (...args: string[]) => spawnSync('ip', ['netns', 'exec', ns.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), ...args],
    { encoding: 'utf8', timeout: 20_000 });

  t.test('routes: check fails, apply is idempotent, check passes, remove leaves others alone', async (t) => {
    const before = relayCli('routes', 'check');
    t.equal(before.status, 1, 'check fails on a bare host');
    t.match(before.stdout, /MISSING\s+IPv4 rule: fwmark 0x5e1a lookup 2017/);
    t.match(before.stdout, /MISSING\s+IPv6 route: local ::\/0 dev lo table 2017/);
    t.match(before.stdout, /fix: ip -4 rule add fwmark 0x5e1a lookup 2017 priority 2017/);

    // An operator's own rule, which remove must not touch.
    ns.ip('rule', 'add', 'fwmark', '0x7', 'lookup', '100', 'priority', '3000');

    const first = relayCli('routes', 'apply');
    t.equal(first.status, 0, first.stderr);
    t.match(first.stdout, /added\s+nftables table inet relay/);
    const second = relayCli('routes', 'apply');
    t.equal(second.status, 0);
    t.notMatch(second.stdout, /added/, 'a second apply adds nothing');
    t.equal(ns.ip('-4', 'rule', 'show').split('\n').filter((l) => l.includes('0x5e1a')).length, 1, 'one rule, not two');

    const after = relayCli('routes', 'check');
    t.equal(after.status, 0, after.stdout);
    t.equal((after.stdout.match(/^OK/gm) ?? []).length, 5, 'five OK lines: nft table, rule and route for each family');

    const removed = relayCli('routes', 'remove');
    t.equal(removed.status, 0);
    t.equal(relayCli('routes', 'check').status, 1, 'check fails again after remove');
    t.match(ns.ip('-4', 'rule', 'show'), /fwmark 0x7 lookup 100/, "the operator's rule is still there");
    t.equal(ns.tryRun('nft', 'list', 'table', 'inet', 'relay').ok, false, "relay's nft table is gone");
  });

  t.test('without CAP_NET_RAW relay exits with one line naming the capability', async (t) => {
    ns.ip('addr', 'add', '192.0.2.1/24', 'dev', 'lo');
    const result = spawnSync('ip', ['netns', 'exec', ns.name, ...IN_NAMESPACE_ENV, 'setpriv', '--reuid=65534', '--regid=65534',
      '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', process.execPath, cliPath(),
      '--listen', '192.0.2.1:8080', '--backend', '198.51.100.20:80'], { encoding: 'utf8', timeout: 20_000 });
    t.equal(result.status, 1);
    t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
    t.match(result.stderr, /^relay: setsockopt\(IP_TRANSPARENT\) EPERM \(IP_TRANSPARENT needs CAP_NET_RAW/);
  });

  t.test('a failed transparent bind closes its fd and says which call failed', async (t) => {
    const sys = JSON.stringify(require.resolve('../../dist/src/sys/index.js'));
    const script = `const s=require(${sys}); const fs=require('fs');
      const opts={transport:'tcp',address:'192.0.2.77',port:5000};
      s.openTransparentFd(opts);
      const before=fs.readdirSync('/proc/self/fd').length; let err;
      for (let i=0;i<200;i++) { try { s.openTransparentFd(opts); } catch (e) { err=e; } }
      const after=fs.readdirSync('/proc/self/fd').length;
      console.log(JSON.stringify({before,after,code:err.code,errno:err.errno,syscall:err.syscall,address:err.address,port:err.port,message:err.message}));`;
    const result = spawnSync('ip', ['netns', 'exec', ns.name, ...IN_NAMESPACE_ENV, process.execPath, '-e', script],
      { encoding: 'utf8', timeout: 20_000 });
    const out = JSON.parse(result.stdout);
    t.equal(out.after, out.before, '200 failed binds left no fd behind');
    t.same({ code: out.code, errno: out.errno, syscall: out.syscall, address: out.address, port: out.port },
      { code: 'EADDRINUSE', errno: -98, syscall: 'bind', address: '192.0.2.77', port: 5000 });
    t.equal(out.message, 'bind EADDRINUSE 192.0.2.77:5000');
  });

  t.test('address in use: one line with the address and a hint', async (t) => {
    const first = lab.spawn(ns, [process.execPath, cliPath(), '--listen', '192.0.2.1:8081', '--backend', '198.51.100.20:80']);
    await first.waitFor(/relay started/);
    const second = relayCli('--listen', '192.0.2.1:8081', '--backend', '198.51.100.20:80');
    t.equal(second.status, 1);
    t.equal(second.stderr.trim(), 'relay: listen EADDRINUSE 192.0.2.1:8081 (another process listens there: stop it, or choose another --listen)');
    t.equal(second.stdout, '', 'no log lines from a relay that never started');
  });

  t.test('a listen address that is not on the host', async (t) => {
    const result = relayCli('--listen', '203.0.113.9:8082', '--backend', '198.51.100.20:80');
    t.equal(result.status, 1);
    t.match(result.stderr, /^relay: bind EADDRNOTAVAIL 203\.0\.113\.9:8082 \(that address is not on this host/);
  });
});
