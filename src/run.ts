// `relay --proto ... --listen ... --backend ...`: start the data paths, log
// one start line, and on SIGTERM/SIGINT drain and exit 0.
import type { RelayConfig } from './config';
import { createLogger, flushLogger, Logger } from './log';
import { assertTransparentAllowed } from './sys';
import { TcpRelay } from '../protocols/tcp';
import { roundRobin } from './balance';
import { formatEndpoint } from './addr';
import { describeError } from './errors';

export async function runRelay(config: RelayConfig): Promise<void> {
  const log = createLogger(config.logLevel);
  for (const family of new Set(config.backends.map((b) => b.family))) {
    assertTransparentAllowed(family);
  }
  const relay = new TcpRelay(config, log, roundRobin(config.backends));
  try {
    await relay.listen();
  } catch (err) {
    relay.closeListeners();
    flushLogger(log);
    throw err;
  }
  log.info({
    proto: config.protocols.join(','),
    listen: config.listeners.map((l) => formatEndpoint(l.address, l.port)),
    backends: config.backends.map((b) => formatEndpoint(b.address, b.port)),
    maxConns: config.maxConns,
    keepClientPort: config.keepClientPort,
    onFamilyMismatch: config.onFamilyMismatch,
  }, 'relay started');
  installShutdown(relay, log, config.drainTimeoutMs);
}

function installShutdown(relay: TcpRelay, log: Logger, drainTimeoutMs: number): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal, open: relay.openConnections }, 'second signal: closing open connections now');
      relay.endDrainNow();
      return;
    }
    stopping = true;
    log.info({ signal, open: relay.openConnections, drainTimeoutMs }, 'stopping: draining connections');
    relay.drain()
      .then(() => {
        log.info({ stats: relay.stats }, 'relay stopped');
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
