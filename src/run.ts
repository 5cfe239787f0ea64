// `relay --proto ... --listen ... --backend ...`: start the data paths, log
// one start line, and on SIGTERM/SIGINT drain and exit 0.
import type { RelayConfig } from './config';
import { createLogger, flushLogger, Logger } from './log';
import { assertTransparentAllowed, raiseFileLimit } from './sys';
import { TcpRelay } from '../protocols/tcp';
import { UdpRelay } from '../protocols/udp';
import { roundRobin } from './balance';
import { formatEndpoint } from './addr';
import { describeError } from './errors';

/** fds relay needs beyond its connections and sessions: stdio, listeners, epoll, libuv. */
const FD_HEADROOM = 64;

interface Relays {
  tcp?: TcpRelay;
  udp?: UdpRelay;
}

export async function runRelay(config: RelayConfig): Promise<void> {
  const log = createLogger(config.logLevel);
  for (const family of new Set(config.backends.map((b) => b.family))) {
    assertTransparentAllowed(family);
  }
  const fileLimit = checkFileLimit(config, log);
  const pick = roundRobin(config.backends);
  const relays: Relays = {
    tcp: config.protocols.includes('tcp') ? new TcpRelay(config, log, pick) : undefined,
    udp: config.protocols.includes('udp') ? new UdpRelay(config, log, pick) : undefined,
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
  log.info({
    proto: config.protocols.join(','),
    listen: config.listeners.map((l) => formatEndpoint(l.address, l.port)),
    ...(relays.udp ? { udpBound: relays.udp.boundAddresses } : {}),
    backends: config.backends.map((b) => formatEndpoint(b.address, b.port)),
    ...(relays.tcp ? { maxConns: config.maxConns, keepClientPort: config.keepClientPort } : {}),
    ...(relays.udp ? { maxSessions: config.maxSessions, sessionTimeoutMs: config.sessionTimeoutMs,
      udpResponses: config.udpResponses } : {}),
    onFamilyMismatch: config.onFamilyMismatch,
    openFileLimit: fileLimit,
  }, 'relay started');
  installShutdown(relays, log, config.drainTimeoutMs);
}

/**
 * Raise the open-file limit to what the configured limits can use, and warn
 * when it cannot be (the kernel would then refuse sockets with EMFILE under load).
 */
function checkFileLimit(config: RelayConfig, log: Logger): number {
  const needed = FD_HEADROOM +
    (config.protocols.includes('tcp') ? 2 * config.maxConns : 0) +
    (config.protocols.includes('udp') ? config.maxSessions : 0);
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
