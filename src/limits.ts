// How many fds the configured limits can use: shared by start-up and doctor.
import type { RelayConfig } from './config';

/** fds relay needs beyond its connections and sessions: stdio, listeners, epoll, libuv. */
const FD_HEADROOM = 64;

export function fdsNeeded(config: RelayConfig): number {
  return FD_HEADROOM +
    (config.protocols.includes('tcp') ? 2 * config.maxConns : 0) +
    // The raw UDP engine's sessions are table entries: no fd each.
    (config.protocols.includes('udp') && config.udpEngine !== 'raw' ? config.maxSessions : 0);
}
