// Reading a PROXY protocol header from a front's TCP connection, before relay
// chooses a backend: the client is read from at once (elsewhere it is not read
// until its upstream connects), the header is parsed as bytes arrive, and what
// follows the header in the same reads is handed on, to be forwarded first.
import type { TcpHandle, FaultOwner } from '../src/sys';
import {
  parseProxyHeader, V1_MAX_LENGTH, V2_DEFAULT_MAX_LENGTH,
  type ProxyHeader, type ProxyHeaderProblem, type ProxyVersionMode,
} from '../src/proxy-protocol';

/** Why a front's connection is closed before its header is read. */
export type HeaderFailure = ProxyHeaderProblem | 'wrong-transport' | 'timeout' | 'closed' | 'client error' | 'internal error';

export type HeaderResult =
  | { ok: true; header: ProxyHeader; /** Bytes after the header, already read; undefined if none. */ rest?: Buffer }
  | { ok: false; why: HeaderFailure; code?: string };

/**
 * Reads one header from client, then stops reading and calls done once. The
 * client is the caller's to close on a failure and to go on with on success;
 * nothing is buffered beyond the header's bound (107 bytes for v1, the v2
 * maximum otherwise) plus the read that completed it.
 */
export class ProxyHeaderReader implements FaultOwner {
  private received: Buffer | undefined;
  private readonly timer: NodeJS.Timeout;
  private finished = false;

  constructor(
    readonly client: TcpHandle,
    private readonly version: ProxyVersionMode,
    timeoutMs: number,
    private readonly done: (result: HeaderResult) => void,
  ) {
    client.owner = this;
    this.timer = setTimeout(() => this.finish({ ok: false, why: 'timeout' }), timeoutMs);
    client.readStart({
      data: (chunk) => this.onData(chunk),
      end: (err) => this.finish({ ok: false, why: err ? 'client error' : 'closed', code: err?.code }),
    });
  }

  /** Give up now (relay is stopping); done is not called. */
  cancel(): void {
    this.finished = true;
    clearTimeout(this.timer);
  }

  internalError(): void {
    this.finish({ ok: false, why: 'internal error' });
  }

  private onData(chunk: Buffer): void {
    if (this.finished) return;
    const received = this.received ? Buffer.concat([this.received, chunk]) : chunk;
    const result = parseProxyHeader(received, this.version, V2_DEFAULT_MAX_LENGTH);
    if (result.status === 'incomplete') {
      // The parser stops waiting at each version's bound; this is a second guard.
      if (received.length > Math.max(V1_MAX_LENGTH, V2_DEFAULT_MAX_LENGTH)) this.finish({ ok: false, why: 'too-long' });
      else this.received = received;
      return;
    }
    if (result.status === 'invalid') {
      this.finish({ ok: false, why: result.problem });
      return;
    }
    if (result.header.command === 'proxy' && result.header.transport !== 'stream') {
      this.finish({ ok: false, why: 'wrong-transport' }); // a UDP client's header on a TCP connection
      return;
    }
    this.client.pauseReading();
    const rest = received.length > result.length ? received.subarray(result.length) : undefined;
    this.finish({ ok: true, header: result.header, rest });
  }

  private finish(result: HeaderResult): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.timer);
    this.received = undefined;
    this.client.owner = undefined;
    this.done(result);
  }
}
