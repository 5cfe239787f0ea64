// Reading a PROXY protocol header from a front's TCP connection, before relay
// chooses a backend: the client is read from at once (elsewhere it is not read
// until its upstream connects), the header is parsed as bytes arrive, and what
// follows the header in the same reads is handed on, to be forwarded first.
import type { TcpHandle, FaultOwner, ReadHandlers } from '../src/sys';
import type { SysError } from '../src/errors';
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
 * Reads one header from client and calls done once. On success the client is
 * still reading: whoever goes on with it gives its reads new handlers at once
 * (TcpHandle.setReader). The client is the caller's to close on a failure;
 * nothing is buffered beyond the header's bound (107 bytes for v1, the v2
 * maximum otherwise) plus the read that completed it.
 */
export class ProxyHeaderReader implements FaultOwner, ReadHandlers {
  private received: Buffer | undefined;
  private finished = false;
  /**
   * When the header must be complete: the owner's one sweep calls expire()
   * after it (a timer per connection showed in the header's cost).
   */
  readonly deadline: number;

  constructor(
    readonly client: TcpHandle,
    private readonly version: ProxyVersionMode,
    timeoutMs: number,
    private readonly done: (result: HeaderResult) => void,
  ) {
    client.owner = this;
    this.deadline = Date.now() + timeoutMs;
    // The reader is its own handlers: no object or closures of their own per connection.
    client.readStart(this);
  }

  /** ReadHandlers: bytes from the front. */
  data(chunk: Buffer): void {
    this.onData(chunk);
  }

  /** ReadHandlers: the front closed, or its read failed, before the header was complete. */
  end(err?: SysError): void {
    this.finish({ ok: false, why: err ? 'client error' : 'closed', code: err?.code });
  }

  /** Give up now (relay is stopping); done is not called. */
  cancel(): void {
    this.finished = true;
  }

  /** The deadline passed: done with 'timeout'. */
  expire(): void {
    this.finish({ ok: false, why: 'timeout' });
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
    const rest = received.length > result.length ? received.subarray(result.length) : undefined;
    this.finish({ ok: true, header: result.header, rest });
  }

  private finish(result: HeaderResult): void {
    if (this.finished) return;
    this.finished = true;
    this.received = undefined;
    this.client.owner = undefined;
    this.done(result);
  }
}
