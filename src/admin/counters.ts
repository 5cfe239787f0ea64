// Per-backend counters the data paths bump in place: a connection or session
// holds its backend's BackendCounters and adds to plain number fields, so the
// data path pays an increment, never a label lookup or a call into a metrics
// library. /metrics reads these at scrape time (src/admin/metrics.ts). Pure.
import type { Endpoint } from '../addr';
import { backendName } from '../balance';
import type { WeightedBackend } from '../balance';

/**
 * Upper bounds (seconds) of the connect-time histogram's buckets: a connect
 * inside one host or rack takes well under a millisecond; one that needed a
 * SYN retransmit takes a second or more.
 */
export const CONNECT_SECONDS_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export class BackendCounters {
  /** TCP connections or UDP sessions given this backend (a retry counts on the backend it moved to). */
  opened = 0;
  /** ... and ended or moved away from it; opened - closed are open now. */
  closed = 0;
  /** TCP connects that failed (refused, timed out, unreachable) before any byte moved. */
  connectFailures = 0;
  bytesFromClient = 0;
  bytesToClient = 0;
  datagramsFromClient = 0;
  datagramsToClient = 0;
  /** Health changes: to up, to down. */
  wentUp = 0;
  wentDown = 0;
  /** Connect times per bucket (not cumulative; the last is +Inf), their sum and count. */
  readonly connectBuckets: number[] = new Array(CONNECT_SECONDS_BUCKETS.length + 1).fill(0);
  connectSecondsSum = 0;

  constructor(readonly name: string) {}

  observeConnect(seconds: number): void {
    let i = 0;
    while (i < CONNECT_SECONDS_BUCKETS.length && seconds > CONNECT_SECONDS_BUCKETS[i]) i++;
    this.connectBuckets[i]++;
    this.connectSecondsSum += seconds;
  }

  get open(): number {
    return this.opened - this.closed;
  }
}

/**
 * One protocol's counters of one service, by backend. A reload gives the
 * balancer new backend objects: they find their counters by ADDR:PORT, so
 * counters never go back to zero while relay runs.
 */
export class BackendCounterTable {
  private readonly byObject = new Map<WeightedBackend | Endpoint, BackendCounters>();
  private readonly byName = new Map<string, BackendCounters>();

  /** The backend's counters: by identity first (the data path hands back what pick() returned). */
  of(backend: WeightedBackend | Endpoint): BackendCounters {
    const known = this.byObject.get(backend);
    if (known !== undefined) return known;
    const name = backendName('endpoint' in backend ? backend.endpoint : backend);
    let counters = this.byName.get(name);
    if (counters === undefined) {
      counters = new BackendCounters(name);
      this.byName.set(name, counters);
    }
    this.byObject.set(backend, counters);
    return counters;
  }

  /** By ADDR:PORT, or undefined for a backend never seen. */
  named(name: string): BackendCounters | undefined {
    return this.byName.get(name);
  }

  all(): IterableIterator<BackendCounters> {
    return this.byName.values();
  }

  /** A reload: forget the old config's backend objects (their counters stay, by name). */
  forgetObjects(): void {
    this.byObject.clear();
  }
}
