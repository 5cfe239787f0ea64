import t from 'tap';
import type * as os from 'node:os';
import { listenAddresses } from '../../src/listen';
import { parseEndpoint } from '../../src/addr';

const iface = (address: string, family: 'IPv4' | 'IPv6') => ({ address, family }) as os.NetworkInterfaceInfo;
const interfaces = {
  lo: [iface('127.0.0.1', 'IPv4'), iface('::1', 'IPv6')],
  eth0: [iface('192.0.2.1', 'IPv4'), iface('192.0.2.9', 'IPv4'), iface('2001:DB8:2::1', 'IPv6'), iface('fe80::1', 'IPv6')],
};

t.test('a specific address is bound as it is', async (t) => {
  t.same(listenAddresses(parseEndpoint('192.0.2.1:53'), interfaces), ['192.0.2.1']);
});

t.test('0.0.0.0 means every local IPv4 address', async (t) => {
  t.same(listenAddresses(parseEndpoint('0.0.0.0:53'), interfaces), ['127.0.0.1', '192.0.2.1', '192.0.2.9']);
});

t.test('[::] means every IPv6 and IPv4 address, without link-local', async (t) => {
  t.same(listenAddresses(parseEndpoint('[::]:53'), interfaces).sort(),
    ['127.0.0.1', '192.0.2.1', '192.0.2.9', '2001:db8:2::1', '::1'].sort());
});
