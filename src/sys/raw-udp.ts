// The kernel half of a UDP engine with no socket per session (issue 15).
//
// Send: one raw IPPROTO_UDP socket per family with IP_TRANSPARENT. relay
// writes the 8-byte UDP header (source port = the client's), the kernel the
// IP header, and an IP_PKTINFO / IPV6_PKTINFO control message names the
// client's address as the source. So one fd sends for every session.
//
// Receive: the backends' replies, addressed to the client, are steered by an
// nftables tproxy rule onto one IP_TRANSPARENT UDP socket with
// IP_RECVORIGDSTADDR / IPV6_RECVORIGDSTADDR: each arrives with the client
// address and port it was meant for. Node's UDP handle drops control
// messages, so the socket is blocking and read with recvmmsg on one of
// koffi's worker threads, which calls back on the event loop.
//
// Structs are laid out by hand for 64-bit Linux (LP64, little-endian), as in
// udp-batch.ts and sockaddr.ts.
import { libc } from './libc';
import { writePointer } from './udp-batch';
import * as C from './constants';
import { encodeSockaddr, familyOf, formatIpv6, ipv4Number, ipv6Bytes, type Family } from './sockaddr';
import { SysError } from '../errors';
import { PRIVILEGE_HINT, bindTo, setIntOption, setReceiveBuffer } from './transparent';

export interface UdpAddress {
  address: string;
  port: number;
}

/**
 * A destination encoded once (rawDestination) and shared by every flow to
 * it: a flow's own encoded copy cost a session two Buffers.
 */
export interface RawDestination {
  readonly sockaddr: Buffer;
  readonly port: number;
}

/**
 * A source as the sender writes it: the port, and the address as a number
 * (IPv4) or its 16 bytes (IPv6). A flow is its own RawSource, so a session
 * pays no object for it (rawSource makes one for a single datagram).
 */
export interface RawSource {
  readonly port: number;
  readonly source4: number;
  readonly source6: Buffer | undefined;
}

export function rawDestination(address: string, port: number): RawDestination {
  // Raw sockets take no port in the destination (IPv6 refuses one): the UDP header carries both.
  return { sockaddr: encodeSockaddr(address, 0), port };
}

export function rawSource(address: string, port: number): RawSource {
  const source4 = ipv4Number(address);
  return source4 !== undefined ? { port, source4, source6: undefined } : { port, source4: 0, source6: ipv6Bytes(address) };
}

/** Write source's address where an IP_PKTINFO (IPv4) or IPV6_PKTINFO source goes in control. */
function writeSource(control: Buffer, at: number, source: RawSource): void {
  if (source.source6) source.source6.copy(control, at);
  else control.writeUInt32BE(source.source4, at);
}

/** An ICMP error about a datagram sent (port unreachable: ECONNREFUSED): who sent it, where to, and the errno. */
export type SendErrorHandler = (client: UdpAddress, backend: UdpAddress, errno: number) => void;

/** struct msghdr offsets (LP64). */
const MSGHDR_SIZE = 56;
const MSG_NAME = 0;
const MSG_NAMELEN = 8;
const MSG_IOV = 16;
const MSG_IOVLEN = 24;
const MSG_CONTROL = 32;
const MSG_CONTROLLEN = 40;
/** struct mmsghdr: msghdr, then msg_len, padded to 8. */
const MMSGHDR_SIZE = 64;
const MSG_LEN = 56;
const IOVEC_SIZE = 16;
/** struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type. */
const CMSG_HEADER = 16;
const UDP_HEADER = 8;
/** The largest UDP payload in one IPv4 datagram (65,535 less the IP and UDP headers). */
const MAX_PAYLOAD = 65_535 - 20 - UDP_HEADER;
/** Room for a sockaddr_in6. */
const NAME_SLOT = 28;

/** CMSG_SPACE(n) for 8-byte alignment. */
function cmsgSpace(n: number): number {
  return CMSG_HEADER + Math.ceil(n / 8) * 8;
}

function openFd(family: Family, type: number, protocol: number): number {
  const fd = libc().socket(family === 4 ? C.AF_INET : C.AF_INET6, type | C.SOCK_CLOEXEC, protocol);
  if (fd < 0) {
    const errno = libc().errno();
    throw new SysError({ errno, syscall: type === C.SOCK_RAW ? 'socket(SOCK_RAW, IPPROTO_UDP)' : 'socket',
      hint: errno === C.EPERM ? 'a raw socket needs CAP_NET_RAW: run relay as root or with that capability' : undefined });
  }
  return fd;
}

/**
 * A classic BPF program of one instruction, "return 0": the raw socket would
 * otherwise get a copy of every UDP datagram the host receives, which relay
 * would read and throw away. The kernel copies the program in.
 */
function attachDropAllFilter(fd: number): void {
  const filter = Buffer.alloc(8);
  filter.writeUInt16LE(0x06, 0); // BPF_RET | BPF_K, k = 0: keep no bytes
  const program = Buffer.alloc(16);
  program.writeUInt16LE(1, 0);
  writePointer(program, 8, libc().addressOf(filter));
  if (libc().setsockopt(fd, C.SOL_SOCKET, C.SO_ATTACH_FILTER, program, program.length) !== 0) {
    throw new SysError({ errno: libc().errno(), syscall: 'setsockopt(SO_ATTACH_FILTER)' });
  }
}

/**
 * Sends datagrams from any client's address and port to any backend, through
 * one raw socket of one family. send() is synchronous; a datagram the kernel
 * refuses (a full buffer, no route) is reported, as UDP may drop.
 */
export class RawUdpSender {
  readonly fd: number;
  private readonly message = Buffer.alloc(MSGHDR_SIZE);
  private readonly iovec = Buffer.alloc(IOVEC_SIZE);
  private readonly name = Buffer.alloc(NAME_SLOT);
  private readonly control: Buffer;
  private readonly packet = Buffer.allocUnsafeSlow(UDP_HEADER + MAX_PAYLOAD);
  private closed = false;
  private errors: ErrorQueue | undefined;
  private batch: SendBatch | undefined;

  constructor(readonly family: Family, options: { mark?: number } = {}) {
    this.fd = openFd(family, C.SOCK_RAW | C.SOCK_NONBLOCK, C.IPPROTO_UDP);
    try {
      const level = family === 4 ? C.SOL_IP : C.SOL_IPV6;
      setIntOption(this.fd, level, family === 4 ? C.IP_TRANSPARENT : C.IPV6_TRANSPARENT, 1,
        family === 4 ? 'IP_TRANSPARENT' : 'IPV6_TRANSPARENT', undefined, PRIVILEGE_HINT);
      // IPv6 requires a UDP checksum: the kernel computes it at offset 6 of what relay writes.
      if (family === 6) setIntOption(this.fd, C.SOL_IPV6, C.IPV6_CHECKSUM, 6, 'IPV6_CHECKSUM');
      if (options.mark) setIntOption(this.fd, C.SOL_SOCKET, C.SO_MARK, options.mark, 'SO_MARK');
      attachDropAllFilter(this.fd);
    } catch (err) {
      libc().close(this.fd);
      throw err;
    }
    // IP_PKTINFO: in_pktinfo (12 bytes); IPV6_PKTINFO: in6_pktinfo (20 bytes).
    const infoSize = family === 4 ? 12 : 20;
    this.control = Buffer.alloc(cmsgSpace(infoSize));
    writePointer(this.control, 0, CMSG_HEADER + infoSize);
    this.control.writeInt32LE(family === 4 ? C.SOL_IP : C.SOL_IPV6, 8);
    this.control.writeInt32LE(family === 4 ? C.IP_PKTINFO : C.IPV6_PKTINFO, 12);
    writePointer(this.message, MSG_NAME, libc().addressOf(this.name));
    writePointer(this.message, MSG_IOV, libc().addressOf(this.iovec));
    writePointer(this.message, MSG_IOVLEN, 1);
    writePointer(this.message, MSG_CONTROL, libc().addressOf(this.control));
    writePointer(this.message, MSG_CONTROLLEN, this.control.length);
    writePointer(this.iovec, 0, libc().addressOf(this.packet));
  }

  /**
   * Send payload from source (the client) to destination (the backend).
   * Returns 0, or the errno the kernel refused it with (e.g. EAGAIN).
   */
  send(source: UdpAddress, destination: UdpAddress, payload: Buffer): number {
    return this.sendOn(rawSource(source.address, source.port), rawDestination(destination.address, destination.port), payload);
  }

  /** send() with both ends encoded. */
  sendOn(source: RawSource, destination: RawDestination, payload: Buffer): number {
    if (payload.length > MAX_PAYLOAD) return -90; // EMSGSIZE
    destination.sockaddr.copy(this.name, 0);
    this.message.writeUInt32LE(destination.sockaddr.length, MSG_NAMELEN);
    // IPv4: ipi_ifindex 0, ipi_spec_dst = the source to use, ipi_addr unused on send. IPv6: ipi6_addr.
    writeSource(this.control, this.family === 4 ? CMSG_HEADER + 4 : CMSG_HEADER, source);
    const length = UDP_HEADER + payload.length;
    const packet = this.packet;
    packet.writeUInt16BE(source.port, 0);
    packet.writeUInt16BE(destination.port, 2);
    packet.writeUInt16BE(length, 4);
    // IPv4 UDP may carry no checksum (0, RFC 768); IPv6 gets the kernel's (IPV6_CHECKSUM).
    packet.writeUInt16BE(0, 6);
    payload.copy(packet, UDP_HEADER);
    this.iovec.writeUInt32LE(length, 8); // iov_len's high half stays 0: a datagram is under 64 KiB
    return libc().sendmsg(this.fd, this.message, C.MSG_DONTWAIT) >= 0 ? 0 : -libc().errno();
  }

  /**
   * Queue payload from source to destination, to leave with the other
   * datagrams queued in this turn of the event loop: one sendmmsg(2) for the
   * batch (flush(), or on the next turn) rather than a sendmsg(2) and a trip
   * through koffi each. failed hears the errno if the kernel refuses it.
   */
  queue(source: RawSource, destination: RawDestination, payload: Buffer, failed: SendFailure): void {
    if (payload.length > MAX_PAYLOAD) {
      failed.sendRefused(-90); // EMSGSIZE
      return;
    }
    (this.batch ??= new SendBatch(this.fd, this.family)).add(source, destination, payload, failed);
  }

  /** Send what queue() holds. */
  flush(): void {
    this.batch?.flush();
  }

  /**
   * Hear of ICMP errors about what this socket sent. relay's nft rule
   * delivers an ICMP error about a raw-engine flow locally; the kernel hands
   * it to the raw sockets of its protocol, which queue it (IP_RECVERR) with
   * the client's address (IP_PKTINFO: the error was sent to it) and the
   * datagram's UDP header (the client's port).
   */
  watchErrors(onError: SendErrorHandler): void {
    if (this.errors || this.closed) return;
    const v4 = this.family === 4;
    setIntOption(this.fd, v4 ? C.SOL_IP : C.SOL_IPV6, v4 ? C.IP_RECVERR : C.IPV6_RECVERR, 1, v4 ? 'IP_RECVERR' : 'IPV6_RECVERR');
    setIntOption(this.fd, v4 ? C.SOL_IP : C.SOL_IPV6, v4 ? C.IP_PKTINFO : C.IPV6_RECVPKTINFO, 1, v4 ? 'IP_PKTINFO' : 'IPV6_RECVPKTINFO');
    this.errors = new ErrorQueue(this.fd, onError);
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.errors) this.errors.close();
    else libc().close(this.fd);
  }
}

/** Hears the errno the kernel refused a queued datagram with. It runs inside a flush: it must not queue. */
export interface SendFailure {
  sendRefused(errno: number): void;
}

/** Datagrams one sendmmsg takes at most, and room for their UDP headers and payloads. */
const SEND_SLOTS = 64;
const SEND_DATA_BYTES = 256 * 1024;

/**
 * Datagrams queued on a raw socket, each with its own destination, IP_PKTINFO
 * source and UDP header, sent with one sendmmsg(2) at the end of the turn
 * (or sooner, when the batch is full or flush() is called).
 */
class SendBatch {
  private readonly messages = Buffer.alloc(SEND_SLOTS * MMSGHDR_SIZE);
  private readonly iovecs = Buffer.alloc(SEND_SLOTS * IOVEC_SIZE);
  private readonly names = Buffer.alloc(SEND_SLOTS * NAME_SLOT);
  private readonly controls: Buffer;
  private readonly controlSize: number;
  /** Where each slot's source address goes in controls: ipi_spec_dst (IPv4), ipi6_addr (IPv6). */
  private readonly sourceAt: number;
  // Written before it is sent from, so it need not start zeroed.
  private readonly data = Buffer.allocUnsafeSlow(SEND_DATA_BYTES);
  private readonly dataAddress: number;
  private readonly failures: SendFailure[] = [];
  private count = 0;
  private dataUsed = 0;
  private flushScheduled = false;
  private readonly flushLater = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  constructor(private readonly fd: number, family: Family) {
    const infoSize = family === 4 ? 12 : 20; // in_pktinfo, in6_pktinfo
    this.controlSize = cmsgSpace(infoSize);
    this.sourceAt = family === 4 ? CMSG_HEADER + 4 : CMSG_HEADER;
    this.controls = Buffer.alloc(SEND_SLOTS * this.controlSize);
    this.dataAddress = libc().addressOf(this.data);
    const names = libc().addressOf(this.names);
    const iovecs = libc().addressOf(this.iovecs);
    const controls = libc().addressOf(this.controls);
    for (let i = 0; i < SEND_SLOTS; i++) {
      const m = i * MMSGHDR_SIZE;
      const c = i * this.controlSize;
      writePointer(this.controls, c, CMSG_HEADER + infoSize);
      this.controls.writeInt32LE(family === 4 ? C.SOL_IP : C.SOL_IPV6, c + 8);
      this.controls.writeInt32LE(family === 4 ? C.IP_PKTINFO : C.IPV6_PKTINFO, c + 12);
      writePointer(this.messages, m + MSG_NAME, names + i * NAME_SLOT);
      writePointer(this.messages, m + MSG_IOV, iovecs + i * IOVEC_SIZE);
      writePointer(this.messages, m + MSG_IOVLEN, 1);
      writePointer(this.messages, m + MSG_CONTROL, controls + c);
      writePointer(this.messages, m + MSG_CONTROLLEN, this.controlSize);
    }
  }

  add(source: RawSource, destination: RawDestination, payload: Buffer, failed: SendFailure): void {
    const length = UDP_HEADER + payload.length;
    if (this.count === SEND_SLOTS || this.dataUsed + length > SEND_DATA_BYTES) this.flush();
    const i = this.count++;
    destination.sockaddr.copy(this.names, i * NAME_SLOT);
    this.messages.writeUInt32LE(destination.sockaddr.length, i * MMSGHDR_SIZE + MSG_NAMELEN);
    writeSource(this.controls, i * this.controlSize + this.sourceAt, source);
    const at = this.dataUsed;
    const data = this.data;
    data.writeUInt16BE(source.port, at);
    data.writeUInt16BE(destination.port, at + 2);
    data.writeUInt16BE(length, at + 4);
    // IPv4 UDP may carry no checksum (0, RFC 768); IPv6 gets the kernel's (IPV6_CHECKSUM).
    data.writeUInt16BE(0, at + 6);
    payload.copy(data, at + UDP_HEADER);
    writePointer(this.iovecs, i * IOVEC_SIZE, this.dataAddress + at);
    this.iovecs.writeUInt32LE(length, i * IOVEC_SIZE + 8); // the high half stays 0
    // 8-byte aligned, as the next UDP header is written with 16-bit stores anyway.
    this.dataUsed += (length + 7) & ~7;
    this.failures[i] = failed;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushLater);
    }
  }

  /**
   * Send what is queued. sendmmsg(2) stops at the first datagram the kernel
   * refuses and reports it only when it is the first of the call: so after a
   * short count the next call starts at that datagram and hears its errno.
   */
  flush(): void {
    let sent = 0;
    const count = this.count;
    while (sent < count) {
      const from = sent === 0 ? this.messages : this.messages.subarray(sent * MMSGHDR_SIZE);
      const n = libc().sendmmsg(this.fd, from, count - sent, C.MSG_DONTWAIT);
      if (n > 0) {
        sent += n;
      } else {
        this.failures[sent].sendRefused(-libc().errno());
        sent++;
      }
    }
    this.count = 0;
    this.dataUsed = 0;
    this.failures.fill(undefined as unknown as SendFailure, 0, count);
  }
}

/** struct pollfd: fd, events (0: errors and hang-ups only), revents. */
const POLLFD_SIZE = 8;
const ERROR_CONTROL = 256;
/** What one wake-up reads at most; the rest waits for the next poll. */
const ERRORS_PER_WAKE = 64;

/**
 * A raw socket's error queue, read when poll (on a worker thread) says it
 * holds something. The socket's fd is closed here, once a blocked poll has
 * returned (shutdown wakes it).
 */
class ErrorQueue {
  private readonly pollfd = Buffer.alloc(POLLFD_SIZE);
  private readonly message = Buffer.alloc(MSGHDR_SIZE);
  private readonly iovec = Buffer.alloc(IOVEC_SIZE);
  private readonly name = Buffer.alloc(NAME_SLOT);
  private readonly control = Buffer.alloc(ERROR_CONTROL);
  private readonly data = Buffer.alloc(64);
  private closing = false;

  constructor(private readonly fd: number, private readonly onError: SendErrorHandler) {
    this.pollfd.writeInt32LE(fd, 0);
    writePointer(this.message, MSG_NAME, libc().addressOf(this.name));
    writePointer(this.message, MSG_IOV, libc().addressOf(this.iovec));
    writePointer(this.message, MSG_IOVLEN, 1);
    writePointer(this.message, MSG_CONTROL, libc().addressOf(this.control));
    writePointer(this.iovec, 0, libc().addressOf(this.data));
    writePointer(this.iovec, 8, this.data.length);
    this.wait();
  }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    libc().shutdown(this.fd, C.SHUT_RDWR);
  }

  private wait(): void {
    libc().pollAsync(this.pollfd, 1, -1, (ready) => {
      if (this.closing) {
        libc().close(this.fd);
        return;
      }
      const read = ready > 0 ? this.drain() : 0;
      // Nothing to read after a wake-up (or a failed poll): pause rather than spin.
      if (read === 0) setTimeout(() => this.wait(), 10).unref();
      else this.wait();
    });
  }

  private drain(): number {
    let read = 0;
    while (read < ERRORS_PER_WAKE) {
      this.message.writeUInt32LE(NAME_SLOT, MSG_NAMELEN);
      writePointer(this.message, MSG_CONTROLLEN, ERROR_CONTROL);
      const n = libc().recvmsg(this.fd, this.message, C.MSG_ERRQUEUE | C.MSG_DONTWAIT);
      if (n < 0) break;
      read++;
      this.deliver(n);
    }
    return read;
  }

  private deliver(length: number): void {
    const backend = readSockaddr(this.name, 0);
    if (!backend || length < 4) return;
    let errno = 0;
    let client: string | undefined;
    const controlLength = Number(this.message.readBigUInt64LE(MSG_CONTROLLEN));
    for (let at = 0; at + CMSG_HEADER <= controlLength;) {
      const size = this.control.readUInt32LE(at);
      if (size < CMSG_HEADER) break;
      const level = this.control.readInt32LE(at + 8);
      const type = this.control.readInt32LE(at + 12);
      const body = at + CMSG_HEADER;
      if ((level === C.SOL_IP && type === C.IP_RECVERR) || (level === C.SOL_IPV6 && type === C.IPV6_RECVERR)) {
        errno = this.control.readUInt32LE(body);
      } else if (level === C.SOL_IP && type === C.IP_PKTINFO) {
        client = `${this.control[body + 8]}.${this.control[body + 9]}.${this.control[body + 10]}.${this.control[body + 11]}`;
      } else if (level === C.SOL_IPV6 && type === C.IPV6_PKTINFO) {
        client = formatIpv6(this.control, body);
      }
      at += CMSG_HEADER + Math.ceil((size - CMSG_HEADER) / 8) * 8;
    }
    if (errno === 0 || client === undefined) return;
    // The queued bytes start at the datagram's UDP header: its ports.
    this.onError({ address: client, port: this.data.readUInt16BE(0) },
      { address: backend.address, port: this.data.readUInt16BE(2) }, -errno);
  }
}

/** Datagrams one receive takes at most. */
const RECEIVE_SLOTS = 64;
/** Reads on the event loop after a batch from the worker thread, at most (see drainQueued). */
const DRAIN_ROUNDS = 4;
const RECEIVE_SLOT_BYTES = 65_536;
const ORIGDST_CONTROL = cmsgSpace(NAME_SLOT);

/**
 * An address and port as one value: for IPv4 a number (the address's 32 bits
 * and the port), for IPv6 the text and the port. The receive loop makes it
 * straight from the kernel's bytes, and a Map finds a flow by it with no
 * string built per datagram (the text of both ends, then a key joined from
 * it, was most of the receive path's JavaScript).
 */
export type EndpointKey = number | string;

export function endpointKey(address: string, port: number): EndpointKey {
  const ipv4 = ipv4Number(address);
  return ipv4 !== undefined ? ipv4 * 65_536 + port : `${address}|${port}`;
}

/** endpointKey of the sockaddr at offset, or undefined for another family. */
function sockaddrKey(buf: Buffer, offset: number): EndpointKey | undefined {
  const family = buf.readUInt16LE(offset);
  const port = buf.readUInt16BE(offset + 2);
  if (family === C.AF_INET) return buf.readUInt32BE(offset + 4) * 65_536 + port;
  if (family === C.AF_INET6) return `${formatIpv6(buf, offset + 8)}|${port}`;
  return undefined;
}

/** A reply, its sender (the backend) and where it was sent (the client), both as endpointKey. */
export type ReplyHandler = (datagram: Buffer, from: EndpointKey, to: EndpointKey) => void;

/**
 * The socket tproxy steers the backends' replies onto: each datagram comes
 * with its sender (the backend) and the address and port it was sent to (the
 * client's). Reads run on a worker thread, one blocking recvmmsg at a time.
 */
export class TproxyReceiver {
  readonly fd: number;
  private readonly messages = Buffer.alloc(RECEIVE_SLOTS * MMSGHDR_SIZE);
  private readonly iovecs = Buffer.alloc(RECEIVE_SLOTS * IOVEC_SIZE);
  private readonly names = Buffer.alloc(RECEIVE_SLOTS * NAME_SLOT);
  private readonly controls = Buffer.alloc(RECEIVE_SLOTS * ORIGDST_CONTROL);
  private readonly data = Buffer.allocUnsafeSlow(RECEIVE_SLOTS * RECEIVE_SLOT_BYTES);
  private closing = false;
  private reading = false;

  /** receiveBufferBytes: every session's replies queue here while the loop is busy. */
  constructor(readonly local: UdpAddress, private readonly onReply: ReplyHandler, receiveBufferBytes = 4 * 1024 * 1024) {
    const family = familyOf(local.address);
    this.fd = openFd(family, C.SOCK_DGRAM, 0);
    try {
      setReceiveBuffer(this.fd, receiveBufferBytes);
      if (family === 4) {
        setIntOption(this.fd, C.SOL_IP, C.IP_TRANSPARENT, 1, 'IP_TRANSPARENT', local, PRIVILEGE_HINT);
        setIntOption(this.fd, C.SOL_IP, C.IP_RECVORIGDSTADDR, 1, 'IP_RECVORIGDSTADDR', local);
      } else {
        setIntOption(this.fd, C.SOL_IPV6, C.IPV6_TRANSPARENT, 1, 'IPV6_TRANSPARENT', local, PRIVILEGE_HINT);
        setIntOption(this.fd, C.SOL_IPV6, C.IPV6_RECVORIGDSTADDR, 1, 'IPV6_RECVORIGDSTADDR', local);
        setIntOption(this.fd, C.SOL_IPV6, C.IPV6_V6ONLY, 1, 'IPV6_V6ONLY', local);
      }
      bindTo(this.fd, local.address, local.port);
    } catch (err) {
      libc().close(this.fd);
      throw err;
    }
    const names = libc().addressOf(this.names);
    const iovecs = libc().addressOf(this.iovecs);
    const controls = libc().addressOf(this.controls);
    const data = libc().addressOf(this.data);
    for (let i = 0; i < RECEIVE_SLOTS; i++) {
      const m = i * MMSGHDR_SIZE;
      writePointer(this.messages, m + MSG_NAME, names + i * NAME_SLOT);
      writePointer(this.messages, m + MSG_IOV, iovecs + i * IOVEC_SIZE);
      writePointer(this.messages, m + MSG_IOVLEN, 1);
      writePointer(this.messages, m + MSG_CONTROL, controls + i * ORIGDST_CONTROL);
      writePointer(this.iovecs, i * IOVEC_SIZE, data + i * RECEIVE_SLOT_BYTES);
      writePointer(this.iovecs, i * IOVEC_SIZE + 8, RECEIVE_SLOT_BYTES);
    }
    this.resetSlots(RECEIVE_SLOTS);
  }

  /** Start the receive loop: one blocking recvmmsg on a worker thread at a time. */
  start(): void {
    if (this.reading || this.closing) return;
    this.reading = true;
    this.readOnce();
  }

  private readOnce(): void {
    libc().recvmmsgAsync(this.fd, this.messages, RECEIVE_SLOTS, C.MSG_WAITFORONE, (n) => {
      if (this.closing) {
        this.reading = false;
        libc().close(this.fd);
        return;
      }
      // A failed read (n < 0) is retried on the next turn, not in a tight loop.
      if (n < 0) {
        this.resetSlots(RECEIVE_SLOTS);
        setTimeout(() => this.readOnce(), 10).unref();
        return;
      }
      this.deliverAll(n);
      this.drainQueued();
      this.readOnce();
    });
  }

  /**
   * Read what queued while a batch was being handled, here on the event loop
   * (MSG_DONTWAIT), before going back to the worker thread: under load each
   * trip there and back (a wake-up of the worker, then of the loop) costs
   * more than a read that finds the socket empty. Bounded, so the listeners
   * get their turn.
   */
  private drainQueued(): void {
    for (let round = 0; round < DRAIN_ROUNDS && !this.closing; round++) {
      const n = libc().recvmmsg(this.fd, this.messages, RECEIVE_SLOTS, C.MSG_DONTWAIT, null);
      if (n <= 0) return;
      this.deliverAll(n);
    }
  }

  /** Hand on the first n datagrams, then make their slots ready for the next read (the kernel rewrote the lengths). */
  private deliverAll(n: number): void {
    for (let i = 0; i < n; i++) this.deliver(i);
    this.resetSlots(n);
  }

  private resetSlots(n: number): void {
    for (let i = 0; i < n; i++) {
      const m = i * MMSGHDR_SIZE;
      this.messages.writeUInt32LE(NAME_SLOT, m + MSG_NAMELEN);
      this.messages.writeUInt32LE(ORIGDST_CONTROL, m + MSG_CONTROLLEN); // msg_controllen's high half stays 0
    }
  }

  private deliver(i: number): void {
    const from = sockaddrKey(this.names, i * NAME_SLOT);
    const to = this.originalDestination(i);
    if (from === undefined || to === undefined) return;
    const length = this.messages.readUInt32LE(i * MMSGHDR_SIZE + MSG_LEN);
    const start = i * RECEIVE_SLOT_BYTES;
    const datagram = Buffer.allocUnsafe(length);
    this.data.copy(datagram, 0, start, start + length);
    this.onReply(datagram, from, to);
  }

  /** The IP_ORIGDSTADDR / IPV6_ORIGDSTADDR control message of datagram i. */
  private originalDestination(i: number): EndpointKey | undefined {
    const m = i * MMSGHDR_SIZE;
    const controlLength = this.messages.readUInt32LE(m + MSG_CONTROLLEN);
    const base = i * ORIGDST_CONTROL;
    if (controlLength < CMSG_HEADER) return undefined;
    const level = this.controls.readInt32LE(base + 8);
    const type = this.controls.readInt32LE(base + 12);
    const isOrigDst = (level === C.SOL_IP && type === C.IP_ORIGDSTADDR) || (level === C.SOL_IPV6 && type === C.IPV6_ORIGDSTADDR);
    return isOrigDst ? sockaddrKey(this.controls, base + CMSG_HEADER) : undefined;
  }

  /**
   * Stop: shutdown wakes the worker blocked in recvmmsg (close alone would
   * not), and the fd is closed once it has returned.
   */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    if (this.reading) libc().shutdown(this.fd, C.SHUT_RDWR);
    else libc().close(this.fd);
  }
}

function readSockaddr(buf: Buffer, offset: number): UdpAddress | undefined {
  const family = buf.readUInt16LE(offset);
  const port = buf.readUInt16BE(offset + 2);
  if (family === C.AF_INET) return { address: `${buf[offset + 4]}.${buf[offset + 5]}.${buf[offset + 6]}.${buf[offset + 7]}`, port };
  if (family === C.AF_INET6) return { address: formatIpv6(buf, offset + 8), port };
  return undefined;
}
