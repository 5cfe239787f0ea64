// Replies from one listener socket to many clients, sent with one sendmmsg(2)
// per turn of the event loop rather than one sendmsg(2) each, and one trip
// through Node's UDP send each. Under load a turn of relay's loop carries a
// few dozen replies (the upstream sockets that became readable together), so
// this takes most of the per-reply system calls and allocations off the path.
// At light load a turn is one event, and a reply waits a few microseconds.
//
// The structs are laid out by hand for 64-bit Linux (LP64, little-endian:
// x86_64 and aarch64), as sockaddr.ts does for addresses.
import { libc } from './libc';

/** struct mmsghdr: struct msghdr (56 bytes) and msg_len (4), padded to 8. */
const MMSGHDR_SIZE = 64;
/** Offsets in struct msghdr. msg_control, msg_controllen and msg_flags stay 0. */
const MSG_NAME = 0;
const MSG_NAMELEN = 8;
const MSG_IOV = 16;
const MSG_IOVLEN = 24;
/** struct iovec: iov_base, iov_len. */
const IOVEC_SIZE = 16;
/** Room for the largest address, a sockaddr_in6; a sockaddr_in uses the first 16 bytes. */
const NAME_SLOT = 28;
const MAX_MESSAGES = 64;
/** Room for several 64 KiB datagrams; a batch that would overflow it is sent first. */
const DATA_BYTES = 256 * 1024;

export class ReplyBatch {
  // Buffer.alloc gives each its own memory (never Node's shared pool), which
  // stays where it is for the life of the Buffer: the pointers below stay valid.
  private readonly messages = Buffer.alloc(MAX_MESSAGES * MMSGHDR_SIZE);
  private readonly iovecs = Buffer.alloc(MAX_MESSAGES * IOVEC_SIZE);
  private readonly names = Buffer.alloc(MAX_MESSAGES * NAME_SLOT);
  private readonly data = Buffer.alloc(DATA_BYTES);
  private readonly dataAddress: number;
  private count = 0;
  private dataUsed = 0;
  private flushScheduled = false;

  /** onDropped counts the datagrams the kernel refused (a full buffer, no route): UDP may drop. */
  constructor(private readonly fd: number, private readonly onDropped: () => void) {
    const c = libc();
    this.dataAddress = c.addressOf(this.data);
    const names = c.addressOf(this.names);
    const iovecs = c.addressOf(this.iovecs);
    for (let i = 0; i < MAX_MESSAGES; i++) {
      const message = i * MMSGHDR_SIZE;
      writePointer(this.messages, message + MSG_NAME, names + i * NAME_SLOT);
      writePointer(this.messages, message + MSG_IOV, iovecs + i * IOVEC_SIZE);
      writePointer(this.messages, message + MSG_IOVLEN, 1);
    }
  }

  /** Queue a datagram for the address in sockaddr (as encodeSockaddr makes it); it is copied. */
  add(datagram: Buffer, sockaddr: Buffer): void {
    if (this.count === MAX_MESSAGES || this.dataUsed + datagram.length > DATA_BYTES) this.flush();
    const i = this.count++;
    sockaddr.copy(this.names, i * NAME_SLOT);
    this.messages.writeUInt32LE(sockaddr.length, i * MMSGHDR_SIZE + MSG_NAMELEN);
    datagram.copy(this.data, this.dataUsed);
    writePointer(this.iovecs, i * IOVEC_SIZE, this.dataAddress + this.dataUsed);
    writePointer(this.iovecs, i * IOVEC_SIZE + 8, datagram.length);
    this.dataUsed += datagram.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Send what is queued. */
  flush(): void {
    this.flushScheduled = false;
    let sent = 0;
    while (sent < this.count) {
      const from = sent === 0 ? this.messages : this.messages.subarray(sent * MMSGHDR_SIZE);
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
function writePointer(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt32LE(value % 0x1_0000_0000, offset);
  buf.writeUInt32LE(Math.floor(value / 0x1_0000_0000), offset + 4);
}
