// `relay --proto ... --listen ... --backend ...`: start the data paths, log
// one start line, and on SIGTERM/SIGINT drain and exit 0.
import type { RelayConfig } from './config';
import { createLogger, flushLogger, Logger } from './log';
import { assertTransparentAllowed, raiseFileLimit } from './sys';
import { TcpRelay } from '../protocols/tcp';
import { UdpRelay } from '../protocols/udp';
import { createBalancer, Balancer } from './balance';
import { HealthChecker } from './health';
import { formatEndpoint } from './addr';
import { describeError } from './errors';
import { fdsNeeded } from './limits';


interface Relays {
  tcp?: TcpRelay;
  udp?: UdpRelay;
}

export async function runRelay(config: RelayConfig): Promise<void> {
  const log = createLogger(config.logLevel);
  for (const family of new Set(config.backends.map((b) => b.endpoint.family))) {
    assertTransparentAllowed(family);
  }
  const fileLimit = checkFileLimit(config, log);
  // Each protocol has its own balancer and health: DNS over TCP and over UDP
  // can fail independently on one backend address.
  const tcpPool = config.protocols.includes('tcp') ? backendPool(config, 'tcp', log) : undefined;
  const udpPool = config.protocols.includes('udp') ? backendPool(config, 'udp', log) : undefined;
  const relays: Relays = {
    tcp: tcpPool ? new TcpRelay(config, log, tcpPool.balancer, tcpPool.health) : undefined,
    udp: udpPool ? new UdpRelay(config, log, udpPool.balancer, udpPool.health) : undefined,
  };
  try {
    await relays.tcp?.listen();
    await relays.udp?.listen();
  } catch (err) {
    relays.tcp?.closeListeners();
    relays.udp?.close();
    flushLogger(log);
    throw err;
  }
  tcpPool?.health.start();
  udpPool?.health.start();
  log.info({
    proto: config.protocols.join(','),
    listen: config.listeners.map((l) => formatEndpoint(l.address, l.port)),
    ...(relays.udp ? { udpBound: relays.udp.boundAddresses } : {}),
    backends: config.backends.map((b) => `${formatEndpoint(b.endpoint.address, b.endpoint.port)}${b.weight !== 1 ? `,weight=${b.weight}` : ''}`),
    balance: config.balance,
    healthIntervalMs: config.health.intervalMs,
    ...(relays.tcp ? { maxConns: config.maxConns, keepClientPort: config.keepClientPort } : {}),
    ...(relays.udp ? { maxSessions: config.maxSessions, sessionTimeoutMs: config.sessionTimeoutMs,
      udpResponses: config.udpResponses } : {}),
    onFamilyMismatch: config.onFamilyMismatch,
    openFileLimit: fileLimit,
  }, 'relay started');
  installShutdown(relays, log, config.drainTimeoutMs);
}

interface BackendPool {
  balancer: Balancer;
  health: HealthChecker;
}

/** A balancer whose backends a health checker marks down and up, with a log line for each change. */
function backendPool(config: RelayConfig, protocol: 'tcp' | 'udp', log: Logger): BackendPool {
  const balancer = createBalancer(config.balance, config.backends);
  const health = new HealthChecker(config.backends.map((b) => b.endpoint), protocol, config.health, (backend, up, reason) => {
    balancer.setUp(backend, up);
    const fields = { proto: protocol, backend: formatEndpoint(backend.address, backend.port), reason };
    if (up) log.info(fields, 'backend up');
    else log.warn(fields, 'backend down');
  });
  return { balancer, health };
}

/**
 * Raise the open-file limit to what the configured limits can use, and warn
 * when it cannot be (the kernel would then refuse sockets with EMFILE under load).
 */
function checkFileLimit(config: RelayConfig, log: Logger): number {
  const needed = fdsNeeded(config);
  const limit = raiseFileLimit(needed);
  if (limit.soft < needed) {
    log.warn({
      openFileLimit: limit.soft, needed,
      ...(config.protocols.includes('tcp') ? { maxConns: config.maxConns } : {}),
      ...(config.protocols.includes('udp') ? { maxSessions: config.maxSessions } : {}),
    },
      'open-file limit is below what --max-conns/--max-sessions can use: raise it (LimitNOFILE= in systemd, ulimit -Hn) or lower them');
  }
  return limit.soft;
}

function installShutdown(relays: Relays, log: Logger, drainTimeoutMs: number): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal, open: relays.tcp?.openConnections ?? 0 }, 'second signal: closing open connections now');
      relays.tcp?.endDrainNow();
      return;
    }
    stopping = true;
    log.info({ signal, open: relays.tcp?.openConnections ?? 0, sessions: relays.udp?.openSessions ?? 0, drainTimeoutMs },
      'stopping: draining connections');
    relays.udp?.close();
    Promise.resolve(relays.tcp?.drain())
      .then(() => {
        log.info({ tcp: relays.tcp?.stats, udp: relays.udp?.stats }, 'relay stopped');
        flushLogger(log);
        process.exit(0);
      })
      .catch((err) => {
        log.error({ err: describeError(err) }, 'error while draining');
        flushLogger(log);
        process.exit(1);
      });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
