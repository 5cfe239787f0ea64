// Which of relay's listeners are IPv6-only (relay and doctor both ask), and
// reading who holds a port from /proc/net. No root.
import t from 'tap';
import { listensV6Only } from '../../src/listen';
import { parseProcNet, isRelayCommand } from '../../src/listen-owner';
import { parseEndpoint } from '../../src/addr';

const ep = (text: string) => parseEndpoint(text);

t.test('[::]:P is IPv6-only beside an IPv4 listen on P of the same protocol, dual-stack alone', async (t) => {
  const both = [ep('0.0.0.0:25'), ep('[::]:25')];
  t.equal(listensV6Only(both[1], 'tcp', both), true);
  t.equal(listensV6Only(both[0], 'tcp', both), false, 'an IPv4 listener is never');
  t.equal(listensV6Only(ep('[::]:25'), 'tcp', [ep('[::]:25')]), false, 'a lone [::] keeps taking IPv4 clients');
  t.equal(listensV6Only(ep('[::]:25'), 'tcp', [ep('[::]:25'), ep('192.0.2.1:25')]), true, 'any IPv4 address on that port');
  t.equal(listensV6Only(ep('[::]:25'), 'tcp', [ep('[::]:25'), ep('0.0.0.0:26')]), false, 'another port does not clash');
  t.equal(listensV6Only(ep('[::]:53'), 'udp', [ep('[::]:53')]), true, 'UDP listeners are always IPv6-only');
});

t.test('/proc/net/tcp6 and the holder\'s command line', async (t) => {
  const table = [
    '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 00000000000000000000000000000000:1D1A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0',
    '   1: 0100007F:0050 0200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 654321 1',
  ].join('\n');
  t.same(parseProcNet(table), [{ port: 7450, state: 0x0a, inode: '123456' }, { port: 80, state: 1, inode: '654321' }]);
  t.same(parseProcNet(''), []);
  t.ok(isRelayCommand(['node', '/opt/relay/dist/src/cli.js', '--listen', '0.0.0.0:25'], '/x/cli.js'));
  t.ok(isRelayCommand(['/usr/bin/node', '/usr/local/bin/relay', '--listen', '0.0.0.0:25'], '/x/cli.js'));
  t.ok(isRelayCommand(['node', '/x/cli.js', '--listen', '0.0.0.0:25'], '/x/cli.js'), 'the same script as this doctor');
  t.notOk(isRelayCommand(['node', '/x/cli.js', 'doctor', '--listen', '0.0.0.0:25'], '/x/cli.js'), 'another doctor is not serving');
  t.notOk(isRelayCommand(['nginx', '-g', 'daemon off;'], '/x/cli.js'));
});
