// GET /metrics: the Prometheus text format, through prom-client's registry.
// Every relay_* family is read at scrape time from counters the data paths
// already keep (TcpRelay.stats, UdpRelay.stats, the per-backend counters of
// counters.ts) and from the balancers: nothing here runs per packet or per
// connection. prom-client's default metrics add the process's fds, open-file
// limit, memory, event-loop lag and GC; they run only when --admin is given.
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Service, ProtocolView, BackendView } from '../service';
import type { BackendCounters } from './counters';
import { CONNECT_SECONDS_BUCKETS } from './counters';
import { droppedLogLines } from '../log';

export type MetricType = 'counter' | 'gauge' | 'histogram';
type Labels = Record<string, string>;
export interface Sample {
  labels: Labels;
  value: number;
  /** For a histogram's _bucket, _sum and _count lines. */
  metricName?: string;
}

/** What the metrics read: the live map of services (a reload adds and removes services in it). */
export type ServiceSource = () => Iterable<Service>;

/** Each per-service family: its name, help, type, and how to read it from one protocol of one service. */
interface ServiceFamily {
  name: string;
  help: string;
  type: MetricType;
  samples(view: ProtocolView, service: Labels): Sample[];
}

/** Reason labels: the logged reason, in snake case ('backend refused' -> backend_refused). */
function reasonLabel(reason: string): string {
  return reason.replace(/[ -]/g, '_');
}

function byReason(counts: Record<string, number>, service: Labels): Sample[] {
  return Object.entries(counts).map(([reason, value]) => ({ labels: { ...service, reason: reasonLabel(reason) }, value }));
}

const tcpOnly = (read: (view: Extract<ProtocolView, { protocol: 'tcp' }>, service: Labels) => Sample[]) =>
  (view: ProtocolView, service: Labels): Sample[] => (view.protocol === 'tcp' ? read(view, service) : []);
const udpOnly = (read: (view: Extract<ProtocolView, { protocol: 'udp' }>, service: Labels) => Sample[]) =>
  (view: ProtocolView, service: Labels): Sample[] => (view.protocol === 'udp' ? read(view, service) : []);
const withProto = (view: ProtocolView, service: Labels): Labels => ({ ...service, proto: view.protocol });

const SERVICE_FAMILIES: ServiceFamily[] = [
  { name: 'relay_tcp_connections_accepted_total', type: 'counter',
    help: 'TCP clients accepted (before a backend is chosen; max-conns rejections are not among them)',
    samples: tcpOnly((v, s) => [{ labels: s, value: v.stats.accepted }]) },
  { name: 'relay_tcp_connections_rejected_total', type: 'counter',
    help: 'TCP clients turned away, by reason: max_conns, no_backend (none up), family_mismatch, upstream_failed (socket could not be opened)',
    samples: tcpOnly((v, s) => byReason({
      max_conns: v.stats.rejectedMaxConns, no_backend: v.stats.rejectedNoBackend,
      family_mismatch: v.stats.rejectedFamilyMismatch, upstream_failed: v.stats.upstreamFailed,
    }, s)) },
  { name: 'relay_tcp_connections_open', type: 'gauge', help: 'TCP connections open now',
    samples: tcpOnly((v, s) => [{ labels: s, value: v.open }]) },
  { name: 'relay_tcp_connections_closed_total', type: 'counter',
    help: 'TCP connections that had a backend and ended, by the reason their close line gives',
    samples: tcpOnly((v, s) => byReason(v.stats.closedBy, s)) },
  { name: 'relay_tcp_connect_retries_total', type: 'counter',
    help: 'TCP connects that failed before any data and were tried again on another backend',
    samples: tcpOnly((v, s) => [{ labels: s, value: v.stats.retried }]) },
  { name: 'relay_udp_sessions_opened_total', type: 'counter', help: 'UDP sessions opened (one per client address and port)',
    samples: udpOnly((v, s) => [{ labels: s, value: v.stats.sessionsOpened }]) },
  { name: 'relay_udp_sessions_open', type: 'gauge', help: 'UDP sessions open now',
    samples: udpOnly((v, s) => [{ labels: s, value: v.open }]) },
  { name: 'relay_udp_sessions_closed_total', type: 'counter',
    help: 'UDP sessions ended, by reason: idle, evicted (table full), responses (udp-responses reached), refused, error, shutdown, ...',
    samples: udpOnly((v, s) => byReason(v.stats.sessionsEnded, s)) },
  { name: 'relay_udp_datagrams_dropped_total', type: 'counter',
    help: 'UDP datagrams dropped, by reason: no_backend, family_mismatch, upstream_failed (no session socket), send_failed (kernel refused the send)',
    samples: udpOnly((v, s) => byReason({
      no_backend: v.stats.droppedNoBackend, family_mismatch: v.stats.droppedFamilyMismatch,
      upstream_failed: v.stats.upstreamFailed, send_failed: v.stats.sendFailed,
    }, s)) },
  { name: 'relay_port_fallbacks_total', type: 'counter',
    help: "Upstreams opened from an ephemeral port because the client's port was in use on this host",
    samples: (v, s) => [{ labels: withProto(v, s), value: v.stats.portFallbacks }] },
  { name: 'relay_upstreams_mapped_total', type: 'counter',
    help: 'Upstreams of IPv4 clients opened from their address inside map-ipv4-prefix (to IPv6 backends)',
    samples: (v, s) => [{ labels: withProto(v, s), value: v.stats.upstreamsMapped }] },
  { name: 'relay_proxy_headers_total', type: 'counter',
    help: 'PROXY protocol headers read from trusted fronts, by kind: client (named a client), local (the front\'s own check, served from relay\'s address)',
    samples: (v, s) => [
      { labels: { ...withProto(v, s), kind: 'client' }, value: v.stats.proxyHeaders },
      { labels: { ...withProto(v, s), kind: 'local' }, value: v.stats.proxyLocal },
    ] },
  { name: 'relay_proxy_refused_total', type: 'counter',
    help: 'Connections closed or datagrams dropped by PROXY protocol ingress, by reason: untrusted (outside proxy-from), header (bad, too long or too slow)',
    samples: (v, s) => [
      { labels: { ...withProto(v, s), reason: 'untrusted' }, value: v.stats.proxyUntrusted },
      { labels: { ...withProto(v, s), reason: 'header' }, value: v.stats.proxyRefused },
    ] },
  { name: 'relay_internal_errors_total', type: 'counter',
    help: "Connections or sessions closed because relay's own handling of them threw (each logged with its stack)",
    samples: (v, s) => [{ labels: withProto(v, s), value: v.stats.internalErrors }] },
];

/** Per-backend families read from the counters (every backend seen since start, removed ones too). */
interface CounterFamily {
  name: string;
  help: string;
  type: MetricType;
  /** Only for this protocol's backends, when set. */
  protocol?: 'tcp' | 'udp';
  samples(counters: BackendCounters, labels: Labels): Sample[];
}

const COUNTER_FAMILIES: CounterFamily[] = [
  { name: 'relay_backend_opened_total', type: 'counter',
    help: 'TCP connections or UDP sessions given this backend (a retried connect counts on each backend tried)',
    samples: (c, l) => [{ labels: l, value: c.opened }] },
  { name: 'relay_backend_open', type: 'gauge', help: 'TCP connections or UDP sessions open on this backend now',
    samples: (c, l) => [{ labels: l, value: c.open }] },
  { name: 'relay_backend_connect_failures_total', type: 'counter', protocol: 'tcp',
    help: 'TCP connects to this backend that failed (refused, timed out, unreachable) before any data',
    samples: (c, l) => [{ labels: l, value: c.connectFailures }] },
  { name: 'relay_backend_bytes_total', type: 'counter',
    help: 'Payload bytes relayed through this backend, by direction: from_client (to the backend), to_client',
    samples: (c, l) => [
      { labels: { ...l, direction: 'from_client' }, value: c.bytesFromClient },
      { labels: { ...l, direction: 'to_client' }, value: c.bytesToClient },
    ] },
  { name: 'relay_backend_datagrams_total', type: 'counter', protocol: 'udp',
    help: 'UDP datagrams relayed through this backend, by direction: from_client, to_client',
    samples: (c, l) => [
      { labels: { ...l, direction: 'from_client' }, value: c.datagramsFromClient },
      { labels: { ...l, direction: 'to_client' }, value: c.datagramsToClient },
    ] },
  { name: 'relay_backend_health_transitions_total', type: 'counter',
    help: 'Health changes of this backend, by the state it went to (up, down)',
    samples: (c, l) => [{ labels: { ...l, to: 'up' }, value: c.wentUp }, { labels: { ...l, to: 'down' }, value: c.wentDown }] },
  { name: 'relay_backend_connect_duration_seconds', type: 'histogram', protocol: 'tcp',
    help: 'Time from the upstream connect to the backend accepting it',
    samples: connectHistogram },
];

function connectHistogram(c: BackendCounters, labels: Labels): Sample[] {
  const name = 'relay_backend_connect_duration_seconds';
  const samples: Sample[] = [];
  let cumulative = 0;
  CONNECT_SECONDS_BUCKETS.forEach((bound, i) => {
    cumulative += c.connectBuckets[i];
    samples.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(bound) }, value: cumulative });
  });
  cumulative += c.connectBuckets[CONNECT_SECONDS_BUCKETS.length];
  samples.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: cumulative });
  samples.push({ metricName: `${name}_sum`, labels, value: c.connectSecondsSum });
  samples.push({ metricName: `${name}_count`, labels, value: cumulative });
  return samples;
}

/** Per-backend gauges of the backends the balancers have now. */
interface StateFamily {
  name: string;
  help: string;
  /** How a primary combines the workers' samples: they share one health state, so a sum would count it per worker. */
  aggregator: Aggregator;
  value(backend: BackendView): number;
}

const STATE_FAMILIES: StateFamily[] = [
  { name: 'relay_backend_up', help: 'Whether health checks and passive reports say the backend is up (1) or down (0)',
    aggregator: 'min', value: (b) => (b.healthy ? 1 : 0) },
  { name: 'relay_backend_drained', help: 'Whether the backend was drained through the admin API (1): it gets no new traffic until enabled or a reload',
    aggregator: 'max', value: (b) => (b.drained ? 1 : 0) },
  { name: 'relay_backend_weight', help: "The backend's weight", aggregator: 'first', value: (b) => b.weight },
];

/**
 * How a primary of --workers combines one family's samples from its workers
 * (prom-client's AggregatorRegistry.aggregate reads it): counters and most
 * gauges add up; a state the workers share does not.
 */
export type Aggregator = 'sum' | 'first' | 'min' | 'max';

/** A metric object prom-client's registry formats: it calls get() at each scrape. */
function family(name: string, help: string, type: MetricType, collect: () => Sample[], aggregator: Aggregator = 'sum') {
  return {
    name, help, type,
    get: async () => ({ name, help, type, values: collect(), aggregator }),
    reset: () => undefined,
  };
}

/** Add one family read at scrape time to registry. */
export function registerFamily(registry: Registry, name: string, help: string, type: MetricType,
  collect: () => Sample[], aggregator: Aggregator = 'sum'): void {
  registry.registerMetric(family(name, help, type, collect, aggregator) as never);
}

/** Each service's protocols, with the labels they carry. */
function* views(source: ServiceSource): Generator<{ view: ProtocolView; service: Labels }> {
  for (const service of source()) {
    for (const view of service.protocolViews()) yield { view, service: { service: service.name } };
  }
}

/** A registry with every relay_* family and the process's default metrics. */
export function createMetricsRegistry(source: ServiceSource, version: string): Registry {
  const registry = new Registry();
  const add = (name: string, help: string, type: MetricType, collect: () => Sample[], aggregator: Aggregator = 'sum') =>
    registerFamily(registry, name, help, type, collect, aggregator);
  for (const f of SERVICE_FAMILIES) {
    add(f.name, f.help, f.type, () => [...views(source)].flatMap(({ view, service }) => f.samples(view, service)));
  }
  for (const f of COUNTER_FAMILIES) {
    add(f.name, f.help, f.type, () => [...views(source)]
      .filter(({ view }) => f.protocol === undefined || f.protocol === view.protocol)
      .flatMap(({ view, service }) => [...view.counters.all()]
        .flatMap((c) => f.samples(c, { ...withProto(view, service), backend: c.name }))));
  }
  for (const f of STATE_FAMILIES) {
    add(f.name, f.help, 'gauge', () => [...views(source)].flatMap(({ view, service }) =>
      view.backends.map((b) => ({ labels: { ...withProto(view, service), backend: b.name }, value: f.value(b) }))), f.aggregator);
  }
  add('relay_log_lines_dropped_total', 'Log lines dropped because stdout stalled (relay never blocks on its log)', 'counter',
    () => [{ labels: {}, value: droppedLogLines() }]);
  add('relay_build_info', 'relay and Node.js versions (always 1)', 'gauge',
    () => [{ labels: { version, node: process.version }, value: 1 }], 'first');
  // process_open_fds, process_max_fds, process_resident_memory_bytes, nodejs_heap_size_used_bytes,
  // nodejs_eventloop_lag_seconds, nodejs_gc_duration_seconds, ...
  collectDefaultMetrics({ register: registry });
  return registry;
}
