import t from 'tap';
import * as util from 'node:util';
import { SysError, ConfigError, RelayError, describeError } from '../../src/errors';

t.test('SysError is shaped like a Node system error', async (t) => {
  const err = new SysError({ errno: 98, syscall: 'bind', address: '192.0.2.1', port: 80 });
  t.equal(err.errno, -98);
  t.equal(err.code, 'EADDRINUSE');
  t.equal(util.getSystemErrorName(err.errno), err.code);
  t.equal(err.syscall, 'bind');
  t.equal(err.address, '192.0.2.1');
  t.equal(err.port, 80);
  t.equal(err.message, 'bind EADDRINUSE 192.0.2.1:80');
});

t.test('SysError brackets IPv6 and accepts a negative errno', async (t) => {
  const err = new SysError({ errno: -1, syscall: 'setsockopt(IPV6_TRANSPARENT)', address: '2001:db8::2', port: 0, hint: 'grant CAP_NET_RAW' });
  t.equal(err.code, 'EPERM');
  t.equal(err.message, 'setsockopt(IPV6_TRANSPARENT) EPERM [2001:db8::2]:0');
  t.equal(describeError(err), 'setsockopt(IPV6_TRANSPARENT) EPERM [2001:db8::2]:0 (grant CAP_NET_RAW)');
});

t.test('describeError gives one line for each kind', async (t) => {
  t.equal(describeError(new ConfigError('--listen is required')), '--listen is required');
  t.equal(describeError(new RelayError('ERR_ROUTES', 'nft failed', 'install nftables')), 'nft failed (install nftables)');
  t.equal(describeError(new Error('plain')), 'plain');
  t.equal(describeError('text'), 'text');
});
