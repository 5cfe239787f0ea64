// Linux constants relay needs that Node does not export. Values are from the
// kernel's uapi headers named beside each group; they are ABI and never change.

// <bits/socket.h>, <linux/socket.h>
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_PEEK = 0x2;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_MORE = 0x8000;
export const MSG_WAITFORONE = 0x10000;
export const MSG_ERRQUEUE = 0x2000;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;

// <asm-generic/socket.h>
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_REUSEPORT = 15;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_LINGER = 13;
export const SO_RCVBUFFORCE = 33;
export const SO_MARK = 36;
export const SO_ATTACH_FILTER = 26;

// <linux/in.h>
export const SOL_IP = 0;
export const IP_FREEBIND = 15;
export const IP_TRANSPARENT = 19;
export const IP_BIND_ADDRESS_NO_PORT = 24;
export const IP_PKTINFO = 8;
export const IP_RECVERR = 11;
export const IP_RECVORIGDSTADDR = 20;
export const IP_ORIGDSTADDR = 20;
export const IPPROTO_UDP = 17;

// <linux/in6.h>
export const SOL_IPV6 = 41;
export const IPV6_V6ONLY = 26;
export const IPV6_CHECKSUM = 7;
export const IPV6_PKTINFO = 50;
export const IPV6_RECVPKTINFO = 49;
export const IPV6_RECVERR = 25;
export const IPV6_RECVORIGDSTADDR = 74;
export const IPV6_ORIGDSTADDR = 74;
export const IPV6_TRANSPARENT = 75;
export const IPV6_FREEBIND = 78;

// <asm-generic/resource.h>
export const RLIMIT_NOFILE = 7;

// <asm-generic/errno-base.h>, <asm-generic/errno.h>
export const EPERM = 1;
export const EAGAIN = 11;
export const EADDRINUSE = 98;
export const ENOTCONN = 107;
