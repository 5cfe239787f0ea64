// A listener socket's traffic in batches, through the system calls Node does
// not offer: replies to many clients leave with one sendmmsg(2) per turn of
// the event loop (ReplyBatch), and the datagrams queued on a listener are
// read with one recvmmsg(2) (ReceiveBatch), rather than one system call
// and one trip through Node's UDP machinery (a 64 KiB allocation, an address
// formatted into an object, a callback) per datagram. Under load a turn of
// relay's loop carries a few dozen of each. At light load a turn is one event,
// and a reply waits a few microseconds.
//
// The structs are laid out by hand for 64-bit Linux (LP64, little-endian:
// x86_64 and aarch64), as sockaddr.ts does for addresses.
import { libc } from './libc';
import { AF_INET, AF_INET6, MSG_DONTWAIT } from './constants';
import { formatIpv6 } from './sockaddr';

/** struct mmsghdr: struct msghdr (56 bytes) and msg_len (4), padded to 8. */
const MMSGHDR_SIZE = 64;
/** Offsets in struct msghdr (msg_control and msg_controllen stay 0), and of msg_len in mmsghdr. */
const MSG_NAME = 0;
const MSG_NAMELEN = 8;
const MSG_IOV = 16;
const MSG_IOVLEN = 24;
const MSG_LEN = 56;
/** struct iovec: iov_base, iov_len. */
const IOVEC_SIZE = 16;
/** Room for the largest address, a sockaddr_in6; a sockaddr_in uses the first 16 bytes. */
const NAME_SLOT = 28;
const MAX_MESSAGES = 64;
/** Room for several 64 KiB datagrams; a batch that would overflow it is sent first. */
const DATA_BYTES = 256 * 1024;

/**
 * count mmsghdr structs, each pointing at its own address slot and its own
 * one-entry iovec, as both batches need them. Buffer.alloc gives each buffer
 * its own memory (never Node's shared pool), which stays where it is for the
 * life of the Buffer: the pointers stay valid.
 */
class MessageVector {
  readonly messages: Buffer;
  readonly iovecs: Buffer;
  readonly names: Buffer;

  constructor(count: number) {
    this.messages = Buffer.alloc(count * MMSGHDR_SIZE);
    this.iovecs = Buffer.alloc(count * IOVEC_SIZE);
    this.names = Buffer.alloc(count * NAME_SLOT);
    const names = libc().addressOf(this.names);
    const iovecs = libc().addressOf(this.iovecs);
    for (let i = 0; i < count; i++) {
      const message = i * MMSGHDR_SIZE;
      writePointer(this.messages, message + MSG_NAME, names + i * NAME_SLOT);
      writePointer(this.messages, message + MSG_IOV, iovecs + i * IOVEC_SIZE);
      writePointer(this.messages, message + MSG_IOVLEN, 1);
    }
  }

  /** Point message i's iovec at length bytes from address. */
  setData(i: number, address: number, length: number): void {
    writePointer(this.iovecs, i * IOVEC_SIZE, address);
    writePointer(this.iovecs, i * IOVEC_SIZE + 8, length);
  }
}

export class ReplyBatch {
  private readonly vector = new MessageVector(MAX_MESSAGES);
  // Written before it is sent from, so it need not start zeroed (and its pages
  // cost memory only once replies have used them).
  private readonly data = Buffer.allocUnsafeSlow(DATA_BYTES);
  private readonly dataAddress: number;
  private count = 0;
  private dataUsed = 0;
  private flushScheduled = false;
  private readonly flushLater = (): void => this.flush();

  /** onDropped counts the datagrams the kernel refused (a full buffer, no route): UDP may drop. */
  constructor(private readonly fd: number, private readonly onDropped: () => void) {
    this.dataAddress = libc().addressOf(this.data);
  }

  /** Queue a datagram for the address in sockaddr (as encodeSockaddr makes it); it is copied. */
  add(datagram: Buffer, sockaddr: Buffer): void {
    if (this.count === MAX_MESSAGES || this.dataUsed + datagram.length > DATA_BYTES) this.flush();
    const i = this.count++;
    sockaddr.copy(this.vector.names, i * NAME_SLOT);
    this.vector.messages.writeUInt32LE(sockaddr.length, i * MMSGHDR_SIZE + MSG_NAMELEN);
    datagram.copy(this.data, this.dataUsed);
    this.vector.setData(i, this.dataAddress + this.dataUsed, datagram.length);
    this.dataUsed += datagram.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushLater);
    }
  }

  /** Send what is queued. */
  flush(): void {
    this.flushScheduled = false;
    let sent = 0;
    while (sent < this.count) {
      const messages = this.vector.messages;
      const from = sent === 0 ? messages : messages.subarray(sent * MMSGHDR_SIZE);
      const n = libc().sendmmsg(this.fd, from, this.count - sent, 0);
      if (n > 0) {
        sent += n;
      } else {
        // The next datagram failed (sendmmsg reports only the first failure):
        // drop it, as the kernel would, and send the rest.
        this.onDropped();
        sent++;
      }
    }
    this.count = 0;
    this.dataUsed = 0;
  }
}

/** A 64-bit little-endian value below 2^53 (a user-space address or a length). */
export function writePointer(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt32LE(value % 0x1_0000_0000, offset);
  buf.writeUInt32LE(Math.floor(value / 0x1_0000_0000), offset + 4);
}

/** Datagrams one receive takes at most; each slot holds the largest datagram. */
const RECEIVE_SLOTS = 16;
const RECEIVE_SLOT_BYTES = 65536;

/**
 * The datagrams waiting on a socket, read with one recvmmsg(2). The sender's
 * address is written here as Node writes it (sessions are keyed by the text):
 * the four numbers for IPv4, formatIpv6 for IPv6. A link-local sender's zone
 * is left out, as relay cannot bind a session to a link-local client anyway.
 * Every datagram is copied out before drain() returns, so one batch serves
 * any number of sockets.
 */
export class ReceiveBatch {
  private readonly vector = new MessageVector(RECEIVE_SLOTS);
  private readonly messages = this.vector.messages;
  private readonly names = this.vector.names;
  // Untouched until the kernel writes into it: 1 MiB of address space, not of memory.
  private readonly data = Buffer.allocUnsafeSlow(RECEIVE_SLOTS * RECEIVE_SLOT_BYTES);

  constructor() {
    const data = libc().addressOf(this.data);
    for (let i = 0; i < RECEIVE_SLOTS; i++) this.vector.setData(i, data + i * RECEIVE_SLOT_BYTES, RECEIVE_SLOT_BYTES);
  }

  /**
   * Read what is queued, without waiting, and hand each datagram (a copy of
   * its own) to message. Returns how many; 0 when nothing was waiting or the
   * read failed (the socket's own reads report failures).
   */
  drain(fd: number, message: (datagram: Buffer, address: string, port: number) => void): number {
    for (let i = 0; i < RECEIVE_SLOTS; i++) this.messages.writeUInt32LE(NAME_SLOT, i * MMSGHDR_SIZE + MSG_NAMELEN);
    const n = libc().recvmmsg(fd, this.messages, RECEIVE_SLOTS, MSG_DONTWAIT, null);
    for (let i = 0; i < n; i++) {
      const name = i * NAME_SLOT;
      const family = this.names.readUInt16LE(name);
      const address = family === AF_INET
        ? `${this.names[name + 4]}.${this.names[name + 5]}.${this.names[name + 6]}.${this.names[name + 7]}`
        : family === AF_INET6 ? formatIpv6(this.names, name + 8) : undefined;
      if (address === undefined) continue;
      const length = this.messages.readUInt32LE(i * MMSGHDR_SIZE + MSG_LEN);
      const start = i * RECEIVE_SLOT_BYTES;
      const datagram = Buffer.allocUnsafe(length);
      this.data.copy(datagram, 0, start, start + length);
      message(datagram, address, this.names.readUInt16BE(name + 2));
    }
    return Math.max(n, 0);
  }
}
