// Through relay, a real nginx on the backend logs the client's own address,
// for TCP over IPv4 and IPv6, and for IPv4 clients of a [::] listener.
import t from 'tap';
import { tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, eventually } from './lab-fixture';
import { startNginxHttp } from '../../src/lab/peers';

t.test('nginx on the backend logs the client address', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ngx');
  const nginx = await startNginxHttp(topo.lab, topo.backend, [ADDR.backend4, ADDR.backend6], 80);
  await relay(topo, ['--listen', '0.0.0.0:8080', '--listen', '[::]:8081',
    '--backend', formatEndpoint(ADDR.backend4, 80), '--backend', formatEndpoint(ADDR.backend6, 80)]);

  const cases = [
    { name: 'TCP4', url: `http://${ADDR.relayClientSide4}:8080/tcp4`, from: ADDR.client4 },
    { name: 'TCP6 on [::]', url: `http://[${ADDR.relayClientSide6}]:8081/tcp6`, from: ADDR.client6 },
    { name: 'TCP4 client on a [::] listener', url: `http://${ADDR.relayClientSide4}:8081/mapped`, from: ADDR.client4 },
  ];
  for (const c of cases) {
    const body = topo.client.run('curl', '-sS', '--max-time', '5', c.url);
    t.equal(body, 'hello from the backend\n', `${c.name}: the client got the backend's reply`);
    const path = new URL(c.url).pathname;
    const line = await eventually(() => nginx.accessLog().find((l) => l.includes(`GET ${path} `)), 5000, `${path} in access log`);
    t.equal(line.split(' ')[0], c.from, `${c.name}: nginx logged the client's address`);
  }
});
