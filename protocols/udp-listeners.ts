// UDP listener sockets: one per address relay serves (see udpListenPlan in
// src/listen.ts), never one wildcard socket. A wildcard socket would reply
// from whatever source the kernel picks, which on a host with several
// addresses is not always the one the client sent to; a socket per address
// replies from its own.
//
// A wildcard --listen follows the host: an AddressWatcher says when addresses
// change, and the set binds a socket for each new address and closes the
// socket of each address that left (its sessions end first). Why per-address
// sockets rather than one socket with IP_PKTINFO: docs/udp.md, "Listening on
// a wildcard address".
import type * as os from 'node:os';
import type { Logger } from '../src/log';
import { formatEndpoint, isWildcard } from '../src/addr';
import { openUdpListener, ReplyBatch, UdpHandle } from '../src/sys';
import { SysError, describeError } from '../src/errors';
import { listenError, udpBindingId, udpListenPlan, UdpBinding } from '../src/listen';
import type { Endpoint } from '../src/addr';
import { AddressWatcher } from '../src/address-watch';

/**
 * Room for a burst of new clients: each needs an upstream socket made before
 * its datagram moves on, and meanwhile the rest wait in the kernel.
 * 4 MiB holds about 5,000 small datagrams.
 */
const LISTENER_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

export interface UdpListener {
  readonly socket: UdpHandle;
  /** Replies to clients leave through this, a batch per turn of the loop. */
  readonly replies: ReplyBatch;
  readonly address: string;
  readonly port: number;
  /** Carries proto and listen address, like the TCP listener's. */
  readonly log: Logger;
}

/** What the data path does with the set's listeners. */
export interface ListenerOwner {
  /** A listener was bound: start reading it. May throw (the socket is then closed). */
  serve(listener: UdpListener): void;
  /** The listener's address left the host: end its sessions. Its socket is closed right after. */
  retire(listener: UdpListener): void;
  /** The kernel refused a reply (full buffer, no route): counted, as UDP drops it. */
  replyDropped(): void;
}

export interface UdpListenersOptions {
  endpoints: readonly Endpoint[];
  /** Worker processes: each socket joins a SO_REUSEPORT group. */
  reusePort?: boolean;
  log: Logger;
  owner: ListenerOwner;
  /** The host's interfaces; tests pass their own. */
  interfaces?: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  /** How changes are noticed (tests pass a stub). */
  watch?: (onChange: () => void, log: Logger) => { stop(): void };
}

export class UdpListeners {
  private readonly bound = new Map<string, UdpListener>();
  /** Addresses relay could not bind after start, with the code logged once. */
  private readonly failing = new Map<string, string>();
  private watcher: { stop(): void } | undefined;
  private closed = false;

  constructor(private readonly options: UdpListenersOptions) {}

  /**
   * Bind every address of the plan. A failure is fatal (thrown) as at any
   * start, except for an address found for a wildcard that is not usable yet
   * (an IPv6 address still tentative): the watcher binds it when it is.
   */
  start(): void {
    for (const binding of this.plan()) {
      try {
        this.bind(binding);
      } catch (err) {
        if (!(binding.fromWildcard && err instanceof SysError && err.code === 'EADDRNOTAVAIL')) {
          throw err instanceof SysError ? listenError(err, { ...binding.endpoint, address: binding.address }) : err;
        }
        this.bindFailed(binding, err);
      }
    }
    if (this.options.endpoints.some((e) => isWildcard(e.address))) {
      const watch = this.options.watch ?? ((onChange, log) => new AddressWatcher({ onChange, log }));
      this.watcher = watch(() => this.followHost(), this.options.log);
    }
  }

  /** The addresses bound now, e.g. for the start line. */
  get boundAddresses(): string[] {
    return [...this.bound.keys()];
  }

  /**
   * Bring the sockets in step with the host's addresses: bind the new ones,
   * close those whose address left. A bind that fails is logged (once per
   * address and code) and tried again at the next change or resync.
   */
  followHost(): void {
    if (this.closed) return;
    let plan: UdpBinding[];
    try {
      plan = this.plan();
    } catch (err) {
      this.options.log.error({ err: describeError(err) }, "cannot read the host's addresses: UDP listeners unchanged");
      return;
    }
    const wanted = new Set(plan.map((b) => udpBindingId(b.address, b.port)));
    for (const [id, listener] of this.bound) {
      if (!wanted.has(id)) this.unbind(id, listener);
    }
    for (const id of this.failing.keys()) {
      if (!wanted.has(id)) this.failing.delete(id);
    }
    for (const binding of plan) {
      const id = udpBindingId(binding.address, binding.port);
      if (this.bound.has(id)) continue;
      try {
        this.bind(binding);
        this.failing.delete(id);
        this.options.log.info({ proto: 'udp', listen: id, for: formatEndpoint(binding.endpoint.address, binding.port) },
          'address added: UDP listener bound');
      } catch (err) {
        this.bindFailed(binding, err);
      }
    }
  }

  close(): void {
    this.closed = true;
    this.watcher?.stop();
    for (const listener of this.bound.values()) {
      listener.replies.flush();
      listener.socket.close();
    }
    this.bound.clear();
  }

  private plan(): UdpBinding[] {
    return udpListenPlan(this.options.endpoints, this.options.interfaces?.());
  }

  private bind(binding: UdpBinding): void {
    const socket = openUdpListener(binding.address, binding.port, LISTENER_RECEIVE_BUFFER_BYTES, this.options.reusePort);
    const id = udpBindingId(binding.address, binding.port);
    const listener: UdpListener = {
      socket, address: binding.address, port: binding.port,
      replies: new ReplyBatch(socket.fd, () => this.options.owner.replyDropped()),
      log: this.options.log.child({ proto: 'udp', listen: id }),
    };
    try {
      this.options.owner.serve(listener);
    } catch (err) {
      socket.close();
      throw err;
    }
    this.bound.set(id, listener);
  }

  /** The address left: its sessions end, queued replies go out (while they still can), the socket closes. */
  private unbind(id: string, listener: UdpListener): void {
    this.bound.delete(id);
    try {
      this.options.owner.retire(listener);
    } finally {
      listener.replies.flush();
      listener.socket.close();
    }
    listener.log.info({}, 'address removed: UDP listener closed');
  }

  private bindFailed(binding: UdpBinding, err: unknown): void {
    const id = udpBindingId(binding.address, binding.port);
    const code = err instanceof SysError ? err.code ?? 'error' : 'error';
    if (this.failing.get(id) === code) return;
    this.failing.set(id, code);
    const described = err instanceof SysError ? listenError(err, { ...binding.endpoint, address: binding.address }) : err;
    // A tentative IPv6 address is bound when it becomes usable: that is not worth a warning.
    const level = code === 'EADDRNOTAVAIL' ? 'info' : 'warn';
    this.options.log[level]({ proto: 'udp', listen: id, err: describeError(described) },
      'cannot bind a UDP listener on this address yet: trying again when addresses change');
  }
}
