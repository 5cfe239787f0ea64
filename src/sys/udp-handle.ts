// Node's own libuv UDP handles, driven without dgram.Socket (see tcp-handle.ts
// for why relay goes below Node's public API, and how it guards that).
//
// For UDP the saving is per datagram: dgram sends every datagram with an
// address through a lookup and a nextTick even for an IP literal, and wraps
// each receive in an EventEmitter. Here a send is one call into libuv, and a
// connect is synchronous (dgram only defers it for the DNS lookup relay never
// needs), so a session's first datagram need not wait a tick. Replies to
// clients do not come through here: see udp-batch.ts.
import { SysError } from '../errors';
import type { Family } from './sockaddr';
import { missingBindingError, missingMethods, processBinding } from './node-binding';

interface RawSendRequest {
  buffer?: Buffer;
}

interface RawUdp {
  readonly fd: number;
  open(fd: number): number;
  connect(address: string, port: number): number;
  connect6(address: string, port: number): number;
  /** Returns the datagram size + 1 when sent at once, 0 when queued, or a negative errno. */
  send(req: RawSendRequest, list: Buffer[], count: number, hasCallback: boolean): number;
  recvStart(): number;
  close(onClosed?: () => void): void;
  onmessage: (nread: number, handle: RawUdp, datagram?: Buffer, from?: { address: string; port: number }) => void;
}

interface Bindings {
  UDP: new () => RawUdp;
  SendWrap: new () => RawSendRequest;
}

let loaded: Bindings | undefined;

function bindings(): Bindings {
  loaded ??= loadBindings();
  return loaded;
}

function loadBindings(): Bindings {
  const udp = processBinding('udp_wrap');
  const UDP = udp.UDP as Bindings['UDP'] | undefined;
  const SendWrap = udp.SendWrap as Bindings['SendWrap'] | undefined;
  const missing = [
    ...(UDP ? [] : ['UDP']), ...(SendWrap ? [] : ['SendWrap']),
    ...missingMethods(UDP, 'UDP', ['open', 'connect', 'connect6', 'send', 'recvStart', 'close']),
  ];
  if (missing.length > 0 || !UDP || !SendWrap) throw missingBindingError('UDP handle', missing);
  return { UDP, SendWrap };
}

function ignoreMessage(): void {}
const EMPTY = Buffer.alloc(0);

/**
 * One send request object serves every send that completes at once, on any
 * socket; only a send libuv has to queue keeps it (until done), and then a
 * new one is made. Likewise one list carries every datagram: libuv reads it
 * during the call only.
 */
let sendRequest: RawSendRequest | undefined;
const sendList: Buffer[] = [EMPTY];

export interface DatagramHandlers {
  /** A datagram arrived from address:port (a buffer of its own: the caller may keep it). */
  message(datagram: Buffer, address: string, port: number): void;
  /** A receive failed; on a connected socket, ECONNREFUSED is the peer's ICMP port unreachable. */
  error(error: SysError): void;
  /**
   * A datagram send() had accepted was dropped when its batch went out (the
   * raw engine sends later, in batches; a socket's send reports a drop at once).
   */
  dropped?(): void;
}

/**
 * One UDP socket. Sends are fire and forget, as UDP is: a datagram the kernel
 * refuses (a full buffer, no route) is dropped and counted by the caller.
 */
export class UdpHandle {
  private closed = false;
  private constructor(private readonly raw: RawUdp, private readonly family: Family) {}

  /** Adopt a socket made elsewhere (bound transparent upstreams and tuned listeners). */
  static adopt(fd: number, family: Family): UdpHandle {
    const raw = new (bindings().UDP)();
    const status = raw.open(fd);
    if (status < 0) {
      raw.close();
      throw new SysError({ errno: status, syscall: 'open' });
    }
    return new UdpHandle(raw, family);
  }

  /** A socket the kernel binds to one of the host's own addresses at connect(). */
  static unbound(family: Family): UdpHandle {
    return new UdpHandle(new (bindings().UDP)(), family);
  }

  /** The socket's fd (for sendmmsg, which Node does not offer; see udp-batch.ts). */
  get fd(): number {
    return this.raw.fd;
  }

  /** Fix the peer: sends need no address, and only its datagrams are received. Synchronous. */
  connect(address: string, port: number): void {
    const status = this.family === 4 ? this.raw.connect(address, port) : this.raw.connect6(address, port);
    if (status < 0) throw new SysError({ errno: status, syscall: 'connect', address, port });
  }

  receive(handlers: DatagramHandlers): void {
    this.raw.onmessage = (nread, _handle, datagram, from) => {
      if (nread < 0) handlers.error(new SysError({ errno: nread, syscall: 'recvmsg' }));
      else if (datagram && from) handlers.message(datagram, from.address, from.port);
    };
    const status = this.raw.recvStart();
    if (status < 0) throw new SysError({ errno: status, syscall: 'recvStart' });
  }

  /** Send on a connected socket. Returns false when the datagram was refused (and so dropped). */
  send(datagram: Buffer): boolean {
    const request = sendRequest ??= new (bindings().SendWrap)();
    sendList[0] = datagram;
    const status = this.raw.send(request, sendList, 1, false);
    sendList[0] = EMPTY; // hold no datagram past its send
    if (status === 0) {
      // Queued in libuv: the request now holds the datagram until it is sent.
      request.buffer = datagram;
      sendRequest = undefined;
    }
    return status >= 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.raw.onmessage = ignoreMessage;
    this.raw.close();
  }
}
