// C-speed UDP peers for the benchmark's UDP cases. test/bench/udp.ts builds
// this with `cc -O2` into the lab's directory at the start of a run. Node's
// dgram costs microseconds per datagram in JavaScript alone: a Node client
// sharing the load CPU with the backend would measure itself, not the proxy.
//
// Every datagram carries a stamp: the sender's own IPv4 address and port (as
// getsockname reports them). The backend compares it with the source address
// and port the datagram arrived from, so "the backend saw the client's address
// AND port" is checked for every datagram, through every proxy.
//
//   echo  --listen A:P [--sink]
//         count datagrams and check stamps; reply with the datagram (its flag
//         byte set to what the check found) unless --sink. Prints a status line
//         every 100 ms: {"event":"status","t":MONOTONIC_NS,"rx":..,...}.
//   rr    --target A:P --local A --sockets N --warmup S --seconds S [--rate R]
//         N sockets (N client ports), each with one request outstanding: a
//         reply is answered at once with the next request. Counts completed
//         requests after the warm-up; prints {"event":"rr-result",...}.
//         --rate R: at most R requests a second in all (a fixed offered load,
//         so proxies compare at equal load, not flat out): an answered socket
//         waits its turn in a queue released at that rate.
//   blast --target A:P --local A --sockets N --warmup S --seconds S
//         N sockets sending 64-byte datagrams round-robin as fast as they go,
//         nothing expected back; prints {"event":"blast-result",...}.
//   hold  --target A:P --local A --sockets N [--parallel P]
//         open N sockets, each sending one request until answered (P at a
//         time), print {"event":"held",...}, then keep them all open until
//         killed: N live sessions in the proxy.
//   spread --target A:P --spoof-base A --addresses K --first-port F --ports M
//          --steps N1,N2,.. --seconds S --recv-port R [--window W] [--measure-from N]
//         many sessions without a socket each: requests leave a raw socket
//         (IP_HDRINCL) from source i = (base + i / M, F + i % M), addresses
//         the client namespace holds by an AnyIP `local` route; replies are
//         steered by nftables tproxy onto one IP_TRANSPARENT socket on port R,
//         which reads where each was sent (IP_ORIGDSTADDR). For each step it
//         fills the sources up to Nk (one request each until answered, 10
//         tries 300 ms apart), prints {"event":"filled",...}, waits for
//         SIGUSR1 (at most 120 s: the runner reads the proxy then), runs
//         request/response across every answered source for S seconds (W
//         outstanding; not at steps below --measure-from, e.g. a warm-up)
//         and prints {"event":"spread-rr",...}; exits after the last step.
//
// Every mode ends on SIGTERM or SIGINT (the default action); rr and blast end
// by themselves after warm-up + seconds.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 64
#define BATCH 64
#define MAGIC "rly1"
// Stamp layout: 0..3 magic, 4..7 sender IPv4, 8..9 sender port (both network
// order), 10 flag set by the backend, 12..15 sequence number.
#define OFF_ADDR 4
#define OFF_PORT 8
#define OFF_FLAG 10
#define OFF_SEQ 12
enum { FLAG_NONE = 0, FLAG_SAME = 1, FLAG_OTHER_ADDR = 2, FLAG_OTHER_PORT = 3 };

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// Point BATCH receive headers at their buffers, source slots and (when ctl is
// given) control slots, as recvmmsg needs them before every call.
static void prepare_receive(struct mmsghdr *msgs, struct iovec *iov, char (*bufs)[2048], struct sockaddr_in *from,
                            char (*ctl)[64]) {
  for (int i = 0; i < BATCH; i++) {
    iov[i].iov_base = bufs[i];
    iov[i].iov_len = sizeof bufs[i];
    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    if (ctl) {
      msgs[i].msg_hdr.msg_control = ctl[i];
      msgs[i].msg_hdr.msg_controllen = sizeof ctl[i];
    }
  }
}

static _Noreturn void die(const char *what) {
  printf("{\"event\":\"fatal\",\"what\":\"%s\",\"errno\":%d,\"error\":\"%s\"}\n", what, errno, strerror(errno));
  fflush(stdout);
  exit(1);
}

static _Noreturn void usage(void) {
  fprintf(stderr, "usage: udp-peers echo --listen A:P [--sink] | rr|blast|hold --target A:P --local A "
                  "--sockets N [--warmup S --seconds S [--rate R] | --parallel P] | spread --target A:P --spoof-base A "
                  "--addresses K --first-port F --ports M --steps N1,N2 --seconds S --recv-port R [--window W] "
                  "[--measure-from N]\n");
  exit(2);
}

static struct sockaddr_in parse_endpoint(const char *spec) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  char host[64];
  const char *colon = strrchr(spec, ':');
  if (colon == NULL || (size_t)(colon - spec) >= sizeof host) usage();
  memcpy(host, spec, (size_t)(colon - spec));
  host[colon - spec] = 0;
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) usage();
  sa.sin_port = htons((uint16_t)atoi(colon + 1));
  return sa;
}

struct opts {
  const char *listen, *target, *local, *spoof_base, *steps;
  int sink, sockets, parallel, addresses, first_port, ports, recv_port, window, measure_from;
  double warmup, seconds, rate;
};

static struct opts parse_opts(int argc, char **argv) {
  struct opts o = {0};
  o.sockets = 1;
  o.parallel = 256;
  o.warmup = 1;
  o.seconds = 5;
  o.addresses = 1;
  o.first_port = 1024;
  o.ports = 64000;
  o.window = 256;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--sink") == 0) { o.sink = 1; continue; }
    if (v == NULL) usage();
    if (strcmp(a, "--listen") == 0) o.listen = v;
    else if (strcmp(a, "--target") == 0) o.target = v;
    else if (strcmp(a, "--local") == 0) o.local = v;
    else if (strcmp(a, "--sockets") == 0) o.sockets = atoi(v);
    else if (strcmp(a, "--parallel") == 0) o.parallel = atoi(v);
    else if (strcmp(a, "--warmup") == 0) o.warmup = atof(v);
    else if (strcmp(a, "--seconds") == 0) o.seconds = atof(v);
    else if (strcmp(a, "--spoof-base") == 0) o.spoof_base = v;
    else if (strcmp(a, "--addresses") == 0) o.addresses = atoi(v);
    else if (strcmp(a, "--first-port") == 0) o.first_port = atoi(v);
    else if (strcmp(a, "--ports") == 0) o.ports = atoi(v);
    else if (strcmp(a, "--steps") == 0) o.steps = v;
    else if (strcmp(a, "--recv-port") == 0) o.recv_port = atoi(v);
    else if (strcmp(a, "--window") == 0) o.window = atoi(v);
    else if (strcmp(a, "--measure-from") == 0) o.measure_from = atoi(v);
    else if (strcmp(a, "--rate") == 0) o.rate = atof(v);
    else usage();
    i++;
  }
  if (o.sockets < 1 || o.parallel < 1 || o.addresses < 1 || o.ports < 1 || o.window < 1 || o.rate < 0) usage();
  if (o.first_port < 1 || o.first_port + o.ports > 65536) usage();
  return o;
}

/* ---------------------------------------------------------------- echo */

static _Noreturn void run_echo(const struct opts *o) {
  if (o->listen == NULL) usage();
  struct sockaddr_in addr = parse_endpoint(o->listen);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  // A deep queue, so the backend on the shared load CPU loses nothing to
  // scheduling delays: drops should happen in the proxy, not here.
  int rcvbuf = 16 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
  printf("{\"event\":\"listening\",\"listen\":\"%s\"}\n", o->listen);
  fflush(stdout);

  static char bufs[BATCH][2048];
  static struct sockaddr_in from[BATCH];
  static struct iovec iov[BATCH];
  static struct mmsghdr msgs[BATCH];
  uint64_t rx = 0, tx = 0, same = 0, other_addr = 0, other_port = 0, unstamped = 0, tx_errors = 0;
  uint64_t next_status = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (t >= next_status) {
      printf("{\"event\":\"status\",\"t\":%llu,\"rx\":%llu,\"tx\":%llu,\"same\":%llu,\"otherAddr\":%llu,"
             "\"otherPort\":%llu,\"unstamped\":%llu,\"txErrors\":%llu}\n",
             (unsigned long long)t, (unsigned long long)rx, (unsigned long long)tx, (unsigned long long)same,
             (unsigned long long)other_addr, (unsigned long long)other_port, (unsigned long long)unstamped,
             (unsigned long long)tx_errors);
      fflush(stdout);
      next_status = t + 100000000ull;
    }
    prepare_receive(msgs, iov, bufs, from, NULL);
    int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die("recvmmsg");
      struct pollfd p = {.fd = fd, .events = POLLIN};
      poll(&p, 1, 50);
      continue;
    }
    for (int i = 0; i < n; i++) {
      rx++;
      char *b = bufs[i];
      unsigned len = msgs[i].msg_len;
      if (len < 16 || memcmp(b, MAGIC, 4) != 0) {
        unstamped++;
      } else if (memcmp(b + OFF_ADDR, &from[i].sin_addr, 4) != 0) {
        other_addr++;
        b[OFF_FLAG] = FLAG_OTHER_ADDR;
      } else if (memcmp(b + OFF_PORT, &from[i].sin_port, 2) != 0) {
        other_port++;
        b[OFF_FLAG] = FLAG_OTHER_PORT;
      } else {
        same++;
        b[OFF_FLAG] = FLAG_SAME;
      }
      iov[i].iov_len = len;
    }
    if (o->sink) continue;
    int sent = 0;
    while (sent < n) {
      int r = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        // One bad destination (EPERM, EINVAL...) must not stall the others: skip it.
        tx_errors++;
        sent++;
        continue;
      }
      sent += r;
      tx += (uint64_t)r;
    }
  }
}

/* ------------------------------------------------------- client sockets */

struct flow {
  int fd;
  uint32_t seq;
  int answered;
  int tries;
  uint64_t sent_at;
  int waiting; /* rr --rate: answered, queued for its turn to send */
  char payload[PAYLOAD];
};

/* A socket bound to local:0 (so the stamp holds a real address), connected to target, stamped. */
static void open_flow(struct flow *f, const struct sockaddr_in *local, const struct sockaddr_in *target) {
  f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (f->fd < 0) die("socket");
  if (bind(f->fd, (const struct sockaddr *)local, sizeof *local) != 0) die("bind");
  if (connect(f->fd, (const struct sockaddr *)target, sizeof *target) != 0) die("connect");
  struct sockaddr_in me;
  socklen_t len = sizeof me;
  if (getsockname(f->fd, (struct sockaddr *)&me, &len) != 0) die("getsockname");
  memset(f->payload, 'x', PAYLOAD);
  memcpy(f->payload, MAGIC, 4);
  memcpy(f->payload + OFF_ADDR, &me.sin_addr, 4);
  memcpy(f->payload + OFF_PORT, &me.sin_port, 2);
  f->payload[OFF_FLAG] = FLAG_NONE;
  f->seq = 0;
  f->answered = 0;
  f->tries = 0;
}

struct errcount {
  int err;
  uint64_t n;
};
#define MAX_ERRS 8
static struct errcount send_errors[MAX_ERRS];

static void count_error(int err) {
  for (int i = 0; i < MAX_ERRS; i++) {
    if (send_errors[i].err == err || send_errors[i].n == 0) {
      send_errors[i].err = err;
      send_errors[i].n++;
      return;
    }
  }
}

static void print_errors(void) {
  printf("\"errors\":{");
  for (int i = 0, first = 1; i < MAX_ERRS && send_errors[i].n > 0; i++, first = 0) {
    printf("%s\"%s\":%llu", first ? "" : ",", strerrorname_np(send_errors[i].err), (unsigned long long)send_errors[i].n);
  }
  printf("}");
}

static void send_request(struct flow *f, uint64_t t) {
  uint32_t seq = htonl(f->seq);
  memcpy(f->payload + OFF_SEQ, &seq, 4);
  f->sent_at = t;
  f->tries++;
  if (send(f->fd, f->payload, PAYLOAD, 0) < 0) count_error(errno);
}

static struct flow *open_flows(const struct opts *o, struct sockaddr_in *local, struct sockaddr_in *target) {
  if (o->target == NULL || o->local == NULL) usage();
  *target = parse_endpoint(o->target);
  char spec[80];
  snprintf(spec, sizeof spec, "%s:0", o->local);
  *local = parse_endpoint(spec);
  // One fd per socket: take the whole soft limit the hard one allows.
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  struct flow *flows = calloc((size_t)o->sockets, sizeof *flows);
  if (flows == NULL) die("calloc");
  return flows;
}

/* ------------------------------------------------------------------ rr */

/* Re-send a request unanswered for this long (a datagram lost on the way). */
#define RR_RETRY_NS 500000000ull

/*
 * rr --rate: flows whose turn has not come, first in first out, released at
 * the rate since the start. Credit unused while every flow was outstanding is
 * capped at one request per socket, so a slow spell is not followed by a burst.
 */
struct pacer {
  double per_ns;
  uint64_t start, released;
  int *queue, head, count, cap;
};

static void pacer_push(struct pacer *p, struct flow *flows, int i) {
  flows[i].waiting = 1;
  p->queue[(p->head + p->count++) % p->cap] = i;
}

static void pacer_release(struct pacer *p, struct flow *flows, uint64_t t) {
  uint64_t due = (uint64_t)((double)(t - p->start) * p->per_ns);
  if (due > p->released + (uint64_t)p->cap) p->released = due - (uint64_t)p->cap;
  while (p->released < due && p->count > 0) {
    struct flow *f = &flows[p->queue[p->head]];
    p->head = (p->head + 1) % p->cap;
    p->count--;
    f->waiting = 0;
    send_request(f, t);
    p->released++;
  }
}

static int run_rr(const struct opts *o) {
  struct sockaddr_in local, target;
  struct flow *flows = open_flows(o, &local, &target);
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < o->sockets; i++) {
    open_flow(&flows[i], &local, &target);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, flows[i].fd, &ev) != 0) die("epoll_ctl");
  }
  uint64_t start = now_ns();
  uint64_t t0 = start + (uint64_t)(o->warmup * 1e9);
  uint64_t t1 = t0 + (uint64_t)(o->seconds * 1e9);
  uint64_t completed = 0, same = 0, other_addr = 0, other_port = 0, unchecked = 0;
  uint64_t retries = 0, stale = 0, refused = 0, rtt_sum = 0, completed_total = 0;
  struct pacer pacer = {.per_ns = o->rate / 1e9, .start = start, .cap = o->sockets};
  if (o->rate > 0) {
    pacer.queue = calloc((size_t)o->sockets, sizeof *pacer.queue);
    if (pacer.queue == NULL) die("calloc");
    for (int i = 0; i < o->sockets; i++) pacer_push(&pacer, flows, i);
  } else {
    for (int i = 0; i < o->sockets; i++) send_request(&flows[i], start);
  }
  static struct epoll_event evs[1024];
  char buf[2048];
  uint64_t next_scan = start + 50000000ull;
  for (;;) {
    int n = epoll_wait(ep, evs, 1024, o->rate > 0 ? 1 : 10);
    uint64_t t = now_ns();
    if (t >= t1) break;
    int counting = t >= t0;
    for (int k = 0; k < n; k++) {
      struct flow *f = &flows[evs[k].data.u32];
      ssize_t len = recv(f->fd, buf, sizeof buf, 0);
      if (len < 0) {
        if (errno == ECONNREFUSED) refused++; // ICMP port unreachable: resent after RR_RETRY_NS
        continue;
      }
      uint32_t seq;
      memcpy(&seq, buf + OFF_SEQ, 4);
      if (len < 16 || memcmp(buf, MAGIC, 4) != 0 || ntohl(seq) != f->seq) {
        stale++; // the answer to a request already re-sent, or garbage
        continue;
      }
      completed_total++;
      if (counting) {
        completed++;
        rtt_sum += t - f->sent_at;
        switch (buf[OFF_FLAG]) {
          case FLAG_SAME: same++; break;
          case FLAG_OTHER_ADDR: other_addr++; break;
          case FLAG_OTHER_PORT: other_port++; break;
          default: unchecked++;
        }
      }
      f->seq++;
      if (o->rate > 0) pacer_push(&pacer, flows, (int)evs[k].data.u32);
      else send_request(f, t);
    }
    if (o->rate > 0) pacer_release(&pacer, flows, t);
    if (t >= next_scan) {
      next_scan = t + 50000000ull;
      for (int i = 0; i < o->sockets; i++) {
        if (!flows[i].waiting && t - flows[i].sent_at > RR_RETRY_NS) {
          flows[i].seq++;
          send_request(&flows[i], t);
          retries++;
        }
      }
    }
  }
  double secs = (double)(t1 - t0) / 1e9;
  printf("{\"event\":\"rr-result\",\"sockets\":%d,\"t0\":%llu,\"t1\":%llu,\"seconds\":%.3f,\"completed\":%llu,"
         "\"rate\":%.1f,\"meanRttUs\":%.1f,\"same\":%llu,\"otherAddr\":%llu,\"otherPort\":%llu,\"unchecked\":%llu,"
         "\"retries\":%llu,\"stale\":%llu,\"refused\":%llu,\"completedWithWarmup\":%llu,\"offeredRate\":%.0f,",
         o->sockets, (unsigned long long)t0, (unsigned long long)t1, secs, (unsigned long long)completed,
         (double)completed / secs, completed ? (double)rtt_sum / (double)completed / 1e3 : 0.0,
         (unsigned long long)same, (unsigned long long)other_addr, (unsigned long long)other_port,
         (unsigned long long)unchecked, (unsigned long long)retries, (unsigned long long)stale,
         (unsigned long long)refused, (unsigned long long)completed_total, o->rate);
  free(pacer.queue);
  print_errors();
  printf("}\n");
  fflush(stdout);
  return 0;
}

/* --------------------------------------------------------------- blast */

#define BLAST_BATCH 16

static int run_blast(const struct opts *o) {
  struct sockaddr_in local, target;
  struct flow *flows = open_flows(o, &local, &target);
  for (int i = 0; i < o->sockets; i++) open_flow(&flows[i], &local, &target);
  struct iovec iov[BLAST_BATCH];
  struct mmsghdr msgs[BLAST_BATCH];
  uint64_t start = now_ns();
  uint64_t t0 = start + (uint64_t)(o->warmup * 1e9);
  uint64_t t1 = t0 + (uint64_t)(o->seconds * 1e9);
  uint64_t sent = 0, sent_total = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (t >= t1) break;
    int counting = t >= t0;
    for (int i = 0; i < o->sockets; i++) {
      struct flow *f = &flows[i];
      for (int k = 0; k < BLAST_BATCH; k++) {
        iov[k].iov_base = f->payload;
        iov[k].iov_len = PAYLOAD;
        memset(&msgs[k], 0, sizeof msgs[k]);
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
      }
      int r = sendmmsg(f->fd, msgs, BLAST_BATCH, 0);
      if (r < 0) {
        count_error(errno);
        continue;
      }
      sent_total += (uint64_t)r;
      if (counting) sent += (uint64_t)r;
    }
  }
  double secs = (double)(t1 - t0) / 1e9;
  printf("{\"event\":\"blast-result\",\"sockets\":%d,\"t0\":%llu,\"t1\":%llu,\"seconds\":%.3f,\"sent\":%llu,"
         "\"rate\":%.1f,\"sentWithWarmup\":%llu,",
         o->sockets, (unsigned long long)t0, (unsigned long long)t1, secs, (unsigned long long)sent,
         (double)sent / secs, (unsigned long long)sent_total);
  print_errors();
  printf("}\n");
  fflush(stdout);
  return 0;
}

/* ---------------------------------------------------------------- hold */

#define HOLD_RETRY_NS 300000000ull
#define HOLD_TRIES 10

static _Noreturn void run_hold(const struct opts *o) {
  struct sockaddr_in local, target;
  struct flow *flows = open_flows(o, &local, &target);
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  uint64_t answered = 0, failed = 0, same = 0, retries = 0;
  static struct epoll_event evs[1024];
  char buf[2048];
  uint64_t start = now_ns();
  for (int first = 0; first < o->sockets; first += o->parallel) {
    int last = first + o->parallel < o->sockets ? first + o->parallel : o->sockets;
    uint64_t t = now_ns();
    for (int i = first; i < last; i++) {
      open_flow(&flows[i], &local, &target);
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
      if (epoll_ctl(ep, EPOLL_CTL_ADD, flows[i].fd, &ev) != 0) die("epoll_ctl");
      send_request(&flows[i], t);
    }
    int waiting = last - first;
    while (waiting > 0) {
      int n = epoll_wait(ep, evs, 1024, 20);
      t = now_ns();
      for (int k = 0; k < n; k++) {
        struct flow *f = &flows[evs[k].data.u32];
        ssize_t len = recv(f->fd, buf, sizeof buf, 0);
        if (len < 16 || f->answered || f->tries > HOLD_TRIES) continue;
        f->answered = 1;
        answered++;
        if (buf[OFF_FLAG] == FLAG_SAME) same++;
        waiting--;
        // Nothing more will come: stop watching it, so epoll stays cheap.
        epoll_ctl(ep, EPOLL_CTL_DEL, f->fd, NULL);
      }
      for (int i = first; i < last; i++) {
        struct flow *f = &flows[i];
        if (f->answered || f->tries > HOLD_TRIES || t - f->sent_at < HOLD_RETRY_NS) continue;
        if (f->tries == HOLD_TRIES) {
          f->tries++;
          failed++;
          waiting--;
          continue;
        }
        retries++;
        send_request(f, t);
      }
    }
  }
  printf("{\"event\":\"held\",\"sockets\":%d,\"answered\":%llu,\"failed\":%llu,\"same\":%llu,\"retries\":%llu,"
         "\"ms\":%llu,",
         o->sockets, (unsigned long long)answered, (unsigned long long)failed, (unsigned long long)same,
         (unsigned long long)retries, (unsigned long long)((now_ns() - start) / 1000000));
  print_errors();
  printf("}\n");
  fflush(stdout);
  for (;;) pause();
}

/* -------------------------------------------------------------- spread */

/* One source address and port: a session in the proxy, no socket here. */
struct source {
  uint32_t seq;
  uint32_t sent_ms; /* ms since the start, when the outstanding request left */
  uint8_t tries;
  uint8_t answered; /* the fill got its reply: the proxy holds a session for it */
  uint8_t pending;  /* a request is outstanding */
};

struct spread {
  const struct opts *o;
  struct source *src;
  int total;
  uint32_t base; /* host order */
  struct sockaddr_in target;
  int raw_fd, rx_fd;
  uint64_t start;
  /* outgoing batch */
  char pkts[BATCH][sizeof(struct iphdr) + sizeof(struct udphdr) + PAYLOAD];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  int queued;
  /* counters: replies by what they proved; a reply for another source, or to no pending request, is stale */
  uint64_t same, other_addr, other_port, unchecked, misdelivered, stale, retries, lost;
};

static uint32_t ms_since(const struct spread *s, uint64_t t) { return (uint32_t)((t - s->start) / 1000000ull); }

static void source_endpoint(const struct spread *s, int i, uint32_t *addr, uint16_t *port) {
  *addr = htonl(s->base + (uint32_t)(i / s->o->ports));
  *port = htons((uint16_t)(s->o->first_port + i % s->o->ports));
}

/* The source a reply was sent to, or -1 if it is none of ours. */
static int source_index(const struct spread *s, const struct sockaddr_in *to) {
  uint32_t a = ntohl(to->sin_addr.s_addr);
  int port = ntohs(to->sin_port);
  if (a < s->base || a - s->base >= (uint32_t)s->o->addresses) return -1;
  if (port < s->o->first_port || port >= s->o->first_port + s->o->ports) return -1;
  int64_t i = (int64_t)(a - s->base) * s->o->ports + (port - s->o->first_port);
  return i < s->total ? (int)i : -1;
}

static void flush_sends(struct spread *s) {
  int sent = 0;
  for (int attempt = 0; sent < s->queued && attempt < 4; attempt++) {
    int r = sendmmsg(s->raw_fd, s->msgs + sent, (unsigned)(s->queued - sent), MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      count_error(errno); /* the rest of the batch is lost: retries or the loss count cover it */
      break;
    }
    sent += r;
  }
  s->queued = 0;
}

/* Queue source i's next request: IPv4 and UDP headers written here, the stamp naming the spoofed source. */
static void queue_request(struct spread *s, int i, uint64_t t) {
  struct source *src = &s->src[i];
  src->seq++;
  src->sent_ms = ms_since(s, t);
  src->tries++;
  src->pending = 1;
  uint32_t addr;
  uint16_t port;
  source_endpoint(s, i, &addr, &port);
  char *p = s->pkts[s->queued];
  struct iphdr *ip = (struct iphdr *)p;
  struct udphdr *udp = (struct udphdr *)(p + sizeof *ip);
  char *payload = p + sizeof *ip + sizeof *udp;
  memset(ip, 0, sizeof *ip);
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = IPPROTO_UDP;
  ip->saddr = addr;
  ip->daddr = s->target.sin_addr.s_addr; /* tot_len, id and check: the kernel fills them (IP_HDRINCL) */
  udp->source = port;
  udp->dest = s->target.sin_port;
  udp->len = htons(sizeof *udp + PAYLOAD);
  udp->check = 0; /* none: allowed over IPv4 */
  memset(payload, 'x', PAYLOAD);
  memcpy(payload, MAGIC, 4);
  memcpy(payload + OFF_ADDR, &addr, 4);
  memcpy(payload + OFF_PORT, &port, 2);
  payload[OFF_FLAG] = FLAG_NONE;
  uint32_t seq = htonl(src->seq);
  memcpy(payload + OFF_SEQ, &seq, 4);
  s->iov[s->queued].iov_base = p;
  s->iov[s->queued].iov_len = sizeof *ip + sizeof *udp + PAYLOAD;
  memset(&s->msgs[s->queued], 0, sizeof s->msgs[s->queued]);
  s->msgs[s->queued].msg_hdr.msg_iov = &s->iov[s->queued];
  s->msgs[s->queued].msg_hdr.msg_iovlen = 1;
  s->msgs[s->queued].msg_hdr.msg_name = &s->target;
  s->msgs[s->queued].msg_hdr.msg_namelen = sizeof s->target;
  if (++s->queued == BATCH) flush_sends(s);
}

static int open_spread_sockets(struct spread *s) {
  s->raw_fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_RAW); /* IPPROTO_RAW implies IP_HDRINCL */
  if (s->raw_fd < 0) die("socket(SOCK_RAW)");
  int buf = 16 << 20;
  setsockopt(s->raw_fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
  s->rx_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (s->rx_fd < 0) die("socket");
  int one = 1;
  /* tproxy hands this socket datagrams for addresses and ports it is not bound to */
  if (setsockopt(s->rx_fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) die("setsockopt(IP_TRANSPARENT)");
  if (setsockopt(s->rx_fd, SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof one) != 0) die("setsockopt(IP_RECVORIGDSTADDR)");
  setsockopt(s->rx_fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->o->recv_port)};
  if (bind(s->rx_fd, (struct sockaddr *)&any, sizeof any) != 0) die("bind(recv port)");
  return 0;
}

/*
 * Read every queued reply (at most 64 batches, then back to the caller) and
 * settle it against its source. Returns the sources answered (the request
 * outstanding, its sequence, its stamp naming the address and port the reply
 * came back to). on_answer(s, i) runs for each.
 */
static int receive_replies(struct spread *s, int wait_ms, void (*on_answer)(struct spread *, int, uint64_t)) {
  static char bufs[BATCH][2048];
  static char ctl[BATCH][64];
  static struct sockaddr_in from[BATCH];
  static struct iovec iov[BATCH];
  static struct mmsghdr msgs[BATCH];
  struct pollfd p = {.fd = s->rx_fd, .events = POLLIN};
  if (poll(&p, 1, wait_ms) <= 0) return 0;
  int answered = 0;
  for (int round = 0; round < 64; round++) {
    prepare_receive(msgs, iov, bufs, from, ctl);
    int n = recvmmsg(s->rx_fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) break;
    uint64_t t = now_ns();
    for (int k = 0; k < n; k++) {
      struct sockaddr_in to = {0};
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[k].msg_hdr); c; c = CMSG_NXTHDR(&msgs[k].msg_hdr, c)) {
        if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) memcpy(&to, CMSG_DATA(c), sizeof to);
      }
      char *b = bufs[k];
      int i = source_index(s, &to);
      uint32_t seq;
      memcpy(&seq, b + OFF_SEQ, 4);
      if (msgs[k].msg_len < 16 || memcmp(b, MAGIC, 4) != 0 || i < 0) { s->stale++; continue; }
      /* The stamp names the source that sent the request: the reply must come back to that one. */
      if (memcmp(b + OFF_ADDR, &to.sin_addr, 4) != 0 || memcmp(b + OFF_PORT, &to.sin_port, 2) != 0) {
        s->misdelivered++;
        continue;
      }
      struct source *src = &s->src[i];
      if (!src->pending || ntohl(seq) != src->seq) { s->stale++; continue; }
      src->pending = 0;
      switch (b[OFF_FLAG]) {
        case FLAG_SAME: s->same++; break;
        case FLAG_OTHER_ADDR: s->other_addr++; break;
        case FLAG_OTHER_PORT: s->other_port++; break;
        default: s->unchecked++;
      }
      answered++;
      on_answer(s, i, t);
    }
    if (n < BATCH) break;
  }
  return answered;
}

static void fill_answered(struct spread *s, int i, uint64_t t) {
  (void)t;
  s->src[i].answered = 1;
}

#define FILL_TRIES 10
#define FILL_RETRY_MS 300
#define STEP_LIMIT_NS (300ull * 1000000000ull)

/* Sources [from, to): one request each until answered, at most parallel outstanding. Returns how many failed. */
static int fill_sources(struct spread *s, int from, int to, int parallel) {
  int next = from, failed = 0, outstanding = 0;
  uint64_t deadline = now_ns() + STEP_LIMIT_NS;
  int settled = 0; /* answered or given up, of [from, to) */
  int scan = from;
  while (settled < to - from && now_ns() < deadline) {
    uint64_t t = now_ns();
    while (outstanding < parallel && next < to) {
      queue_request(s, next++, t);
      outstanding++;
    }
    flush_sends(s);
    int got = receive_replies(s, 5, fill_answered);
    outstanding -= got;
    settled += got;
    /* Retry what went unanswered: a bounded walk over the outstanding range, from where the last one stopped. */
    t = now_ns();
    uint32_t now_ms = ms_since(s, t);
    for (int k = 0, n = next - from; k < n && k < 4096; k++) {
      if (scan >= next) scan = from;
      struct source *src = &s->src[scan];
      if (src->pending && now_ms - src->sent_ms > FILL_RETRY_MS) {
        if (src->tries >= FILL_TRIES) {
          src->pending = 0;
          failed++;
          settled++;
          outstanding--;
        } else {
          s->retries++;
          queue_request(s, scan, t);
        }
      }
      scan++;
    }
    flush_sends(s);
  }
  for (int i = from; i < to; i++) {
    if (!s->src[i].answered && s->src[i].pending) { s->src[i].pending = 0; failed++; }
  }
  return failed;
}

static uint64_t rr_completed;

static void rr_answered(struct spread *s, int i, uint64_t t) {
  (void)s; (void)i; (void)t;
  rr_completed++;
}

/* Request/response across every answered source of [0, n): window outstanding, the next source in turn after each reply. */
static void spread_rr(struct spread *s, int n, double seconds, int window) {
  uint64_t t0 = now_ns(), t1 = t0 + (uint64_t)(seconds * 1e9);
  uint64_t same0 = s->same, lost0 = s->lost, other0 = s->other_addr + s->other_port + s->unchecked;
  rr_completed = 0;
  int cursor = 0, outstanding = 0;
  int scan = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (t >= t1) break;
    /* Next sources in turn, skipping those never answered in the fill (no session) and those still waiting. */
    for (int guard = 0; outstanding < window && guard < n; guard++) {
      int i = cursor;
      cursor = (cursor + 1) % n;
      if (!s->src[i].answered || s->src[i].pending) continue;
      s->src[i].tries = 0;
      queue_request(s, i, t);
      outstanding++;
    }
    flush_sends(s);
    outstanding -= receive_replies(s, 5, rr_answered);
    /* A request unanswered for 500 ms is lost: its slot in the window goes to the next source. */
    uint32_t now_ms = ms_since(s, now_ns());
    for (int k = 0; k < n && k < 8192; k++) {
      if (scan >= n) scan = 0;
      struct source *src = &s->src[scan++];
      if (src->pending && now_ms - src->sent_ms > 500) {
        src->pending = 0;
        s->lost++;
        outstanding--;
      }
    }
  }
  uint64_t t_end = now_ns();
  /* The stragglers' replies are not counted: drain briefly so the next step starts clean. */
  for (int k = 0; k < 20; k++) receive_replies(s, 5, rr_answered);
  for (int i = 0; i < n; i++) s->src[i].pending = 0;
  double secs = (double)(t_end - t0) / 1e9;
  printf("{\"event\":\"spread-rr\",\"sessions\":%d,\"seconds\":%.3f,\"completed\":%llu,\"rate\":%.1f,\"same\":%llu,"
         "\"wrong\":%llu,\"lost\":%llu,\"window\":%d,",
         n, secs, (unsigned long long)rr_completed, (double)rr_completed / secs, (unsigned long long)(s->same - same0),
         (unsigned long long)(s->other_addr + s->other_port + s->unchecked - other0), (unsigned long long)(s->lost - lost0),
         window);
  print_errors();
  printf("}\n");
  fflush(stdout);
}

/* Wait for SIGUSR1 (the runner has read the proxy), at most 120 s. Returns 0 on the signal. */
static int wait_for_go(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  struct timespec limit = {.tv_sec = 120};
  return sigtimedwait(&set, NULL, &limit) == SIGUSR1 ? 0 : -1;
}

static int run_spread(const struct opts *o) {
  if (o->target == NULL || o->spoof_base == NULL || o->steps == NULL || o->recv_port < 1) usage();
  /* SIGUSR1 is taken by sigtimedwait, never by its default action (exit), however early it comes. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, NULL);
  static struct spread s;
  s.o = o;
  s.target = parse_endpoint(o->target);
  struct in_addr base;
  if (inet_pton(AF_INET, o->spoof_base, &base) != 1) usage();
  s.base = ntohl(base.s_addr);
  int steps[16], nsteps = 0;
  for (const char *p = o->steps; *p && nsteps < 16; nsteps++) {
    steps[nsteps] = atoi(p);
    if (steps[nsteps] < 1 || (nsteps > 0 && steps[nsteps] <= steps[nsteps - 1])) usage();
    p = strchr(p, ',');
    if (p == NULL) { nsteps++; break; }
    p++;
  }
  s.total = steps[nsteps - 1];
  if ((int64_t)o->addresses * o->ports < s.total) usage();
  s.src = calloc((size_t)s.total, sizeof *s.src);
  if (s.src == NULL) die("calloc");
  open_spread_sockets(&s);
  s.start = now_ns();
  int filled = 0, failed = 0;
  for (int k = 0; k < nsteps; k++) {
    uint64_t t = now_ns();
    failed += fill_sources(&s, filled, steps[k], o->parallel);
    filled = steps[k];
    int answered = 0;
    for (int i = 0; i < filled; i++) answered += s.src[i].answered;
    printf("{\"event\":\"filled\",\"sessions\":%d,\"answered\":%d,\"failed\":%d,\"same\":%llu,\"wrong\":%llu,"
           "\"misdelivered\":%llu,\"stale\":%llu,\"retries\":%llu,\"ms\":%llu,",
           filled, answered, failed, (unsigned long long)s.same,
           (unsigned long long)(s.other_addr + s.other_port + s.unchecked), (unsigned long long)s.misdelivered,
           (unsigned long long)s.stale, (unsigned long long)s.retries, (unsigned long long)((now_ns() - t) / 1000000));
    print_errors();
    printf("}\n");
    fflush(stdout);
    if (wait_for_go() != 0) {
      printf("{\"event\":\"fatal\",\"what\":\"no SIGUSR1 within 120 s\",\"error\":\"timeout\"}\n");
      fflush(stdout);
      return 1;
    }
    if (o->seconds > 0 && filled >= o->measure_from) spread_rr(&s, filled, o->seconds, o->window);
  }
  printf("{\"event\":\"spread-done\",\"misdelivered\":%llu,\"stale\":%llu}\n", (unsigned long long)s.misdelivered,
         (unsigned long long)s.stale);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  struct opts o = parse_opts(argc, argv);
  if (strcmp(argv[1], "echo") == 0) run_echo(&o);
  if (strcmp(argv[1], "rr") == 0) return run_rr(&o);
  if (strcmp(argv[1], "blast") == 0) return run_blast(&o);
  if (strcmp(argv[1], "hold") == 0) run_hold(&o);
  if (strcmp(argv[1], "spread") == 0) return run_spread(&o);
  usage();
}
