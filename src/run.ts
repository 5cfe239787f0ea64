// `relay --proto ... --listen ... --backend ...`: start the data paths, log
// one start line, and on SIGTERM/SIGINT drain and exit 0. SIGHUP never stops
// it; SIGUSR2 logs its counters; a throw outside any connection ends it with
// one line and a non-zero status, for a supervisor to restart it.
import * as fs from 'node:fs';
import type { RelayConfig } from './config';
import { createLogger, flushLogger, droppedLogLines, errorWithStack, Logger } from './log';
import { assertTransparentAllowed, raiseFileLimit } from './sys';
import { runSelfTest } from './sys/self-test';
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
  exitOnUncaught(log);
  const selfTest = await runSelfTest(); // relay's handles on this Node.js, over loopback: refuses the start if they differ
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
    node: process.version, selfTestMs: Math.round(selfTest.ms * 10) / 10,
  }, 'relay started');
  installShutdown(relays, log, config.drainTimeoutMs);
  installOperatorSignals(relays, log);
}

/**
 * A throw that no connection or session owns (a listener's, a timer's of
 * relay's own, the event loop's): relay's state can no longer be trusted, so
 * it logs one line with the stack and exits non-zero for its supervisor
 * (systemd Restart=on-failure) to start it afresh. Throws inside one
 * connection's or session's handling never get here: they close only that one.
 */
function exitOnUncaught(log: Logger): void {
  const fatal = (err: unknown) => {
    log.fatal({ err: errorWithStack(err) }, 'internal error outside any connection: exiting');
    flushLogger(log);
    process.exit(1);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
}

/**
 * SIGHUP: nginx and HAProxy reload on it and systemd's ExecReload often sends
 * it, so an operator's habit must not stop relay (Node's default). Until
 * reload exists it says so and goes on serving. SIGUSR2: one line with the
 * counters and what relay holds (fds, memory), without stopping anything.
 */
function installOperatorSignals(relays: Relays, log: Logger): void {
  process.on('SIGHUP', () => {
    log.warn({ signal: 'SIGHUP' }, 'SIGHUP: configuration reload is not supported yet: still serving with the configuration it started with');
  });
  process.on('SIGUSR2', () => {
    log.info(statsFields(relays), 'relay stats');
  });
}

function statsFields(relays: Relays): object {
  const memory = process.memoryUsage();
  return {
    fds: openFds(),
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    logLinesDropped: droppedLogLines(),
    ...(relays.tcp ? { tcp: { ...relays.tcp.stats, open: relays.tcp.openConnections } } : {}),
    ...(relays.udp ? { udp: { ...relays.udp.stats, sessions: relays.udp.openSessions } } : {}),
  };
}

/** The fds this process holds (the directory read itself holds one more while it runs). */
function openFds(): number | undefined {
  try {
    return fs.readdirSync('/proc/self/fd').length - 1;
  } catch {
    return undefined;
  }
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
        log.info({ tcp: relays.tcp?.stats, udp: relays.udp?.stats, logLinesDropped: droppedLogLines() }, 'relay stopped');
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
