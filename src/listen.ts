// Turning a failed listen() into one line an operator can act on.
import { SysError } from './errors';
import type { Endpoint } from './addr';

const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE: 'another process listens there: stop it, or choose another --listen',
  EADDRNOTAVAIL: 'that address is not on this host: add it, or listen on 0.0.0.0 / [::]',
  EACCES: 'ports below 1024 need CAP_NET_BIND_SERVICE (or root)',
};

export function listenError(err: NodeJS.ErrnoException, endpoint: Endpoint): Error {
  if (typeof err.errno !== 'number') return err;
  return new SysError({
    errno: err.errno,
    syscall: err.syscall ?? 'listen',
    address: endpoint.address,
    port: endpoint.port,
    hint: LISTEN_HINTS[err.code ?? ''],
  });
}
