// Backend health: active checks on a timer (TCP: a connect; UDP: a probe
// datagram that must be answered) and passive reports from real traffic
// (connect refused or timed out, ICMP unreachable). HAProxy's model: a backend
// goes down after `fall` failures in a row and comes back after `rise`
// successes in a row. The tracker is pure; the checker does the I/O.
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { Endpoint, formatEndpoint } from './addr';
import type { HealthLink } from './health-link';

export interface HealthOptions {
  /** 0 disables active checks (passive reports still count). */
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
  /** UDP: the probe to send; undefined means no active UDP check. */
  udpProbe?: Buffer;
  /** Without active checks, when to try a backend that traffic marked down (default PASSIVE_RETRY_MS). */
  passiveRetryMs?: number;
}

/** Without active checks, a backend that real traffic marked down is tried again after this. */
export const PASSIVE_RETRY_MS = 10_000;

/**
 * A backend went up or down here. decided: this process decided it (a single
 * relay, or the workers' leader); false when it applies a decision made
 * elsewhere (a follower hearing the leader, a restarted leader taking back the
 * relay's state), which must not count as another transition of the relay.
 */
export type HealthChange = (endpoint: Endpoint, up: boolean, reason: string, decided: boolean) => void;

/** Consecutive-result counting for one backend. Starts up: traffic flows until checks say otherwise. */
export class HealthState {
  up = true;
  private successes = 0;
  private failures = 0;
  constructor(private readonly rise: number, private readonly fall: number) {}

  /** Record a result; returns true when it changed the state. */
  record(ok: boolean): boolean {
    if (ok) {
      this.failures = 0;
      this.successes++;
      if (!this.up && this.successes >= this.rise) return this.flip(true);
    } else {
      this.successes = 0;
      this.failures++;
      if (this.up && this.failures >= this.fall) return this.flip(false);
    }
    return false;
  }

  private flip(up: boolean): boolean {
    this.up = up;
    this.successes = 0;
    this.failures = 0;
    return true;
  }
}

export class HealthChecker {
  /** By ADDR:PORT: connections opened before a reload report with endpoints of the config they came from. */
  private readonly states = new Map<string, HealthState>();
  /** The same states by the endpoints this checker was given: the data path reports with them, no string per report. */
  private readonly byEndpoint = new Map<Endpoint, HealthState>();
  private timer: NodeJS.Timeout | undefined;
  private readonly retries = new Set<NodeJS.Timeout>();
  private checking = false;

  constructor(
    private readonly backends: readonly Endpoint[],
    private readonly protocol: 'tcp' | 'udp',
    private readonly options: HealthOptions,
    private readonly onChange: HealthChange,
    /** With workers: one state per relay, decided by the leader (src/health-link.ts). */
    private readonly shared?: { link: HealthLink; keyOf(backend: Endpoint): string },
  ) {
    for (const backend of backends) {
      const state = new HealthState(options.rise, options.fall);
      this.states.set(nameOf(backend), state);
      this.byEndpoint.set(backend, state);
    }
    for (const backend of shared ? backends : []) {
      shared!.link.register(shared!.keyOf(backend),
        (ok, reason) => this.record(backend, ok, reason),
        (up, reason) => this.apply(backend, up, reason));
    }
  }

  /** A follower: the leader decides, this process reports and applies. */
  private get follower(): boolean {
    return this.shared !== undefined && !this.shared.link.leader;
  }

  /** The leader's decision (or, for a leader restarted, the relay's state before it). */
  private apply(backend: Endpoint, up: boolean, reason: string): void {
    const state = this.states.get(nameOf(backend));
    if (!state || state.up === up) return;
    state.up = up;
    this.onChange(backend, up, reason, false);
    if (!up && !this.follower && !this.active) this.retryLater(backend, state);
  }

  isUp(backend: Endpoint): boolean {
    return this.states.get(nameOf(backend))?.up ?? true;
  }

  /**
   * A reload: backends this checker shares with the one it replaces keep
   * their state, so a down backend stays down until its checks (or, without
   * them, the passive retry) bring it back. Call before start().
   */
  inherit(previous: HealthChecker): void {
    for (const backend of this.backends) {
      const old = previous.states.get(nameOf(backend));
      if (old === undefined || old.up) continue;
      const state = this.states.get(nameOf(backend))!;
      state.up = false;
      if (!this.active) this.retryLater(backend, state);
    }
  }

  /** Whether active checks run: without them only time brings a backend back. */
  private get active(): boolean {
    return this.options.intervalMs > 0 && (this.protocol === 'tcp' || this.options.udpProbe !== undefined);
  }

  start(): void {
    if (!this.active || this.follower) return; // one relay, one set of active checks: the leader's
    this.timer = setInterval(() => void this.checkAll(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    for (const retry of this.retries) clearTimeout(retry);
    this.retries.clear();
  }

  /** A failure seen in real traffic counts like a failed check. */
  reportFailure(backend: Endpoint, reason: string): void {
    this.record(backend, false, reason);
  }

  /** Real traffic got through: failures must be in a row to count. */
  reportSuccess(backend: Endpoint): void {
    this.record(backend, true, 'traffic passed');
  }

  private async checkAll(): Promise<void> {
    if (this.checking) return; // a slow round must not pile up behind the timer
    this.checking = true;
    try {
      await Promise.all(this.backends.map(async (backend) => {
        const failure = this.protocol === 'tcp' ? await checkTcp(backend, this.options.timeoutMs)
          : await checkUdp(backend, this.options.udpProbe!, this.options.timeoutMs);
        this.record(backend, failure === undefined, failure ?? 'check passed');
      }));
    } finally {
      this.checking = false;
    }
  }

  /** By identity first (this config's endpoints), else by ADDR:PORT (a connection opened before a reload). */
  private stateOf(backend: Endpoint): HealthState | undefined {
    return this.byEndpoint.get(backend) ?? this.states.get(nameOf(backend));
  }

  private record(backend: Endpoint, ok: boolean, reason: string): void {
    if (this.follower) {
      this.shared!.link.report(this.shared!.keyOf(backend), ok, reason);
      return;
    }
    const state = this.stateOf(backend);
    if (!state?.record(ok)) return;
    this.changed(backend, state.up, reason);
    if (!state.up && !this.active) this.retryLater(backend, state);
  }

  /** A decision: applied here and, with workers, announced to every other worker. */
  private changed(backend: Endpoint, up: boolean, reason: string): void {
    this.onChange(backend, up, reason, true);
    this.shared?.link.announce(this.shared.keyOf(backend), up, reason);
  }

  /**
   * Passive detection alone: a down backend gets no traffic, so nothing would
   * ever show it recovered. Like nginx's fail_timeout, try it again later.
   */
  private retryLater(backend: Endpoint, state: HealthState): void {
    const delayMs = this.options.passiveRetryMs ?? PASSIVE_RETRY_MS;
    const retry = setTimeout(() => {
      this.retries.delete(retry);
      if (state.up) return;
      state.up = true;
      this.changed(backend, true, `tried again ${delayMs} ms after going down (no active checks)`);
    }, delayMs).unref();
    this.retries.add(retry);
  }
}

function nameOf(backend: Endpoint): string {
  return formatEndpoint(backend.address, backend.port);
}

/** undefined when the backend accepted a connection within the timeout, else why not. */
export function checkTcp(backend: Endpoint, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: backend.address, port: backend.port });
    const finish = (failure: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(failure);
    };
    const timer = setTimeout(() => finish(`connect timeout after ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => finish(undefined));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(`connect ${err.code ?? err.message}`));
  });
}

/** undefined when the backend answered the probe within the timeout, else why not. */
export function checkUdp(backend: Endpoint, probe: Buffer, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket({ type: backend.family === 4 ? 'udp4' : 'udp6' });
    const finish = (failure: string | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(failure);
    };
    const timer = setTimeout(() => finish(`no reply to the probe within ${timeoutMs} ms`), timeoutMs);
    socket.once('message', () => finish(undefined));
    // A connected socket hears ICMP port unreachable as ECONNREFUSED.
    socket.once('error', (err: NodeJS.ErrnoException) => finish(`probe ${err.code ?? err.message}`));
    // With a callback, dgram hands a failed connect (no route) to it instead of emitting 'error'.
    const onConnect = (err?: NodeJS.ErrnoException) => (err ? finish(`probe ${err.code ?? err.message}`) : socket.send(probe));
    socket.connect(backend.port, backend.address, onConnect as () => void);
  });
}
