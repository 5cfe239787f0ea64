// `relay doctor`: check, with the same flags as a run, everything a
// transparent setup needs, one line per check: OK, or FAIL with the command
// that fixes it. The end-to-end checks send real traffic from a client-like
// address, so a backend without its return route is named as such instead of
// surfacing later as clients' timeouts.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { listenAddresses, listenError } from './listen';
import type { RelayConfig, RoutesConfig, RunOptions } from './config';
import type { Endpoint } from './addr';
import { familyOfAddress, formatEndpoint, isWildcard } from './addr';
import type { Family } from './sys/sockaddr';
import { assertTransparentAllowed, bindTransparentUdp, connectTransparent, getFileLimit, raiseFileLimit } from './sys';
import { relayHostSteps, backendRecipes } from './routes';
import { tryCommand } from './shell';
import { describeError } from './errors';
import { fdsNeeded } from './limits';

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  /** What was found, for OK and FAIL alike. */
  readonly detail?: string;
  /** Commands or steps that fix a FAIL. */
  readonly fix?: readonly string[];
}

/** Doctor checks a run's setup: its options are a run's, built by config.buildRunOptions. */
export type DoctorOptions = RunOptions;

export async function runDoctor(options: DoctorOptions): Promise<CheckResult[]> {
  const families = [...new Set(options.run.backends.map((b) => b.endpoint.family))];
  const results: CheckResult[] = [
    ...families.map(checkPrivilege),
    checkFileLimit(options.run),
    ...checkRelayRoutes(options.routes, families),
    ...options.run.listeners.map(checkListenAddress),
    ...families.map(checkForwarding),
  ];
  for (const listener of options.run.listeners) {
    for (const protocol of options.run.protocols) results.push(await checkListenBind(listener, protocol));
  }
  const privileged = results.slice(0, families.length).every((r) => r.ok);
  for (const backend of options.run.backends.map((b) => b.endpoint)) {
    for (const protocol of options.run.protocols) {
      results.push(privileged
        ? await checkEndToEnd(backend, protocol, options)
        : { name: `end to end ${protocol} ${formatEndpoint(backend.address, backend.port)}`, ok: false,
          detail: 'skipped: transparent sockets are not allowed (see above)' });
    }
  }
  return results;
}

function checkPrivilege(family: Family): CheckResult {
  const name = `privilege: IP${family === 6 ? 'V6' : ''}_TRANSPARENT`;
  try {
    assertTransparentAllowed(family);
    return { name, ok: true, detail: 'allowed (CAP_NET_RAW or CAP_NET_ADMIN held)' };
  } catch (err) {
    return { name, ok: false, detail: describeError(err), fix: [
      'run relay with CAP_NET_RAW: systemd AmbientCapabilities=CAP_NET_RAW (see docs/setup.md),',
      'or: setpriv --inh-caps=+net_raw --ambient-caps=+net_raw ... relay ..., or run as root',
    ] };
  }
}

function checkFileLimit(config: RelayConfig): CheckResult {
  const needed = fdsNeeded(config);
  const limit = raiseFileLimit(needed);
  const name = 'open-file limit';
  if (limit.soft >= needed) return { name, ok: true, detail: `${limit.soft} >= ${needed} needed by the configured limits` };
  return { name, ok: false, detail: `${limit.soft} (hard ${getFileLimit().hard}) < ${needed} needed`, fix: [
    'raise it: LimitNOFILE= in the systemd unit, or ulimit -Hn; or lower --max-conns / --max-sessions',
  ] };
}

function checkRelayRoutes(routes: RoutesConfig, families: readonly Family[]): CheckResult[] {
  return relayHostSteps(routes, families).map((step) => {
    let present: boolean;
    try {
      present = step.isPresent();
    } catch (err) {
      // Reading nftables needs CAP_NET_ADMIN, which a least-privilege relay
      // does not hold; the end-to-end checks below test what the table does.
      return { name: `relay host: ${step.name}`, ok: true,
        detail: `not readable here (${describeError(err)}): the end-to-end checks test it` };
    }
    return present ? { name: `relay host: ${step.name}`, ok: true }
      : { name: `relay host: ${step.name}`, ok: false, detail: 'missing: backends\' replies to clients will not reach relay',
        fix: ['relay routes apply'] };
  });
}

function checkListenAddress(listener: Endpoint): CheckResult {
  const name = `listen address ${formatEndpoint(listener.address, listener.port)}`;
  const wildcard = listener.address === '0.0.0.0' || listener.address === '::';
  const local = wildcard || Object.values(os.networkInterfaces()).flat().some((i) => i?.address === listener.address);
  return local ? { name, ok: true, detail: wildcard ? 'wildcard' : 'on this host' }
    : { name, ok: false, detail: 'not an address of this host', fix: [`ip addr add ${listener.address}/${listener.family === 4 ? 32 : 128} dev lo`] };
}

/** Try the listen itself (then let go): a port in use or below 1024 without the capability shows here, not at start. */
async function checkListenBind(listener: Endpoint, protocol: 'tcp' | 'udp'): Promise<CheckResult> {
  const name = `listen ${protocol} ${formatEndpoint(listener.address, listener.port)}`;
  // UDP binds what relay binds: each address a wildcard stands for, one socket each (docs/udp.md).
  const addresses = protocol === 'tcp' ? [listener.address] : listenAddresses(listener);
  for (const address of addresses) {
    const endpoint = { ...listener, address, family: familyOfAddress(address) };
    const err = await tryBind(endpoint, protocol);
    if (err) {
      return { name, ok: false, detail: describeError(listenError(err, endpoint)),
        fix: err.code === 'EACCES' ? ['grant CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit), or listen on a port >= 1024']
          : err.code === 'EADDRINUSE' ? ['stop what listens there (ss -lntup), or choose another --listen'] : [] };
    }
  }
  const each = protocol === 'udp' && isWildcard(listener.address)
    ? ` (each of the ${addresses.length} addresses relay binds now: ${addresses.join(', ')})` : '';
  return { name, ok: true, detail: `free, and relay may bind it${each}` };
}

/** Bind and let go; the error when the bind fails. */
function tryBind(endpoint: Endpoint, protocol: 'tcp' | 'udp'): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    if (protocol === 'tcp') {
      const server = net.createServer();
      server.once('error', (err) => resolve(err as NodeJS.ErrnoException));
      server.listen({ host: endpoint.address, port: endpoint.port, ipv6Only: false }, () => server.close(() => resolve(undefined)));
    } else {
      const socket = dgram.createSocket({ type: endpoint.family === 4 ? 'udp4' : 'udp6', ipv6Only: endpoint.family === 6 });
      socket.once('error', (err) => { socket.close(); resolve(err as NodeJS.ErrnoException); });
      socket.bind({ address: endpoint.address, port: endpoint.port, exclusive: true }, () => socket.close(() => resolve(undefined)));
    }
  });
}

/**
 * relay itself never needs forwarding (replies are delivered locally); a
 * relay host that is also its backends' gateway (recipe b) does, for their
 * other traffic. Informational, so always OK.
 */
function checkForwarding(family: Family): CheckResult {
  const file = family === 4 ? '/proc/sys/net/ipv4/ip_forward' : '/proc/sys/net/ipv6/conf/all/forwarding';
  const on = readSysctl(file) === 1;
  return { name: `forwarding (IPv${family})`, ok: true, detail: `${on ? 'on' : 'off'}: relay does not need it; ` +
    'a relay host that is also the backends\' gateway needs it on for their other traffic' };
}

function readSysctl(file: string): number | undefined {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim());
  } catch {
    return undefined;
  }
}

/**
 * Where rp_filter matters: strict reverse-path filtering on the interface the
 * backend's replies arrive on drops them when the route back to the backend
 * uses another interface (asymmetric paths). Said only when a probe failed.
 */
function rpFilterNote(backend: Endpoint): string | undefined {
  if (backend.family !== 4) return undefined;
  const dev = tryCommand(['ip', '-j', 'route', 'get', backend.address]);
  let iface: string | undefined;
  try {
    iface = JSON.parse(dev.stdout)[0]?.dev;
  } catch {
    return undefined;
  }
  if (!iface) return undefined;
  const strict = Math.max(readSysctl('/proc/sys/net/ipv4/conf/all/rp_filter') ?? 0,
    readSysctl(`/proc/sys/net/ipv4/conf/${iface}/rp_filter`) ?? 0) === 1;
  return strict ? `rp_filter is strict on ${iface}: if the backend's replies arrive on another interface they are dropped: ` +
    `sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.${iface}.rp_filter=2` : undefined;
}

async function checkEndToEnd(backend: Endpoint, protocol: 'tcp' | 'udp', options: DoctorOptions): Promise<CheckResult> {
  const source = options.probeSources[backend.family];
  const name = `end to end ${protocol} ${formatEndpoint(backend.address, backend.port)} from ${source}`;
  if (protocol === 'udp' && !options.run.health.udpProbe) {
    // Not a failure: relay cannot guess a datagram the service answers, and
    // `relay --check` must not refuse to start for want of one.
    return { name, ok: true, detail: 'not checked: give --health-udp-probe HEX (e.g. a DNS query) to check UDP end to end' };
  }
  const failure = protocol === 'tcp' ? await probeTcp(backend, source, options.probeTimeoutMs)
    : await probeUdp(backend, source, options);
  if (failure === undefined) return { name, ok: true, detail: 'the backend\'s reply came back through relay' };
  const fix = failure.returnPath ? recipeFor(backend, options.routes) : failure.fix ?? [];
  const rpFilter = failure.returnPath ? rpFilterNote(backend) : undefined;
  return { name, ok: false, detail: failure.detail, fix: rpFilter ? [...fix, rpFilter] : fix };
}

interface ProbeFailure {
  detail: string;
  /** The symptom of a missing backend return route: print the recipe. */
  returnPath?: boolean;
  fix?: string[];
}

function recipeFor(backend: Endpoint, routes: RoutesConfig): string[] {
  return ['first, relay\'s own routes must be in place (a FAIL above, or `relay routes check` as root);',
    'then the backend routes replies to clients elsewhere, or is down: on the backend host, apply one recipe:',
    ...backendRecipes({ ...routes, backends: [backend] }).filter((l) => l !== '')];
}

function probeTcp(backend: Endpoint, source: string, timeoutMs: number): Promise<ProbeFailure | undefined> {
  return new Promise((resolve) => {
    let socket: net.Socket;
    try {
      socket = connectTransparent({ transport: 'tcp', address: source, port: 0 }, backend);
    } catch (err) {
      resolve({ detail: describeError(err) });
      return;
    }
    const finish = (failure: ProbeFailure | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(failure);
    };
    const timer = setTimeout(() => finish({ returnPath: true,
      detail: `no answer to a connect from ${source} within ${timeoutMs} ms: the SYN-ACK did not come back through relay` }),
    timeoutMs);
    socket.once('connect', () => finish(undefined));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNREFUSED'
      ? { detail: 'connection refused: the backend answered through relay, but nothing listens on that port',
        fix: [`start the service on ${formatEndpoint(backend.address, backend.port)}`] }
      : { detail: `connect ${err.code}`, returnPath: err.code === 'ETIMEDOUT' }));
  });
}

/**
 * An unconnected socket, so a reply from another source address (a service on
 * a wildcard address answering from the host's primary address) is seen and named.
 */
function probeUdp(backend: Endpoint, source: string, options: DoctorOptions): Promise<ProbeFailure | undefined> {
  const probe = options.run.health.udpProbe;
  if (!probe) {
    return Promise.resolve(undefined);
  }
  return new Promise((resolve) => {
    let socket: ReturnType<typeof bindTransparentUdp>;
    try {
      socket = bindTransparentUdp({ address: source, port: 0 });
    } catch (err) {
      resolve({ detail: describeError(err) });
      return;
    }
    const finish = (failure: ProbeFailure | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(failure);
    };
    const timer = setTimeout(() => finish({ returnPath: true,
      detail: `no reply to the probe from ${source} within ${options.probeTimeoutMs} ms: the reply did not come back ` +
        'through relay (no return route, or the service answered from another address)' }), options.probeTimeoutMs);
    socket.on('message', (_msg, rinfo) => {
      if (rinfo.address === backend.address && rinfo.port === backend.port) return finish(undefined);
      finish({ detail: `the reply came from ${formatEndpoint(rinfo.address, rinfo.port)}, not ${formatEndpoint(backend.address, backend.port)}: ` +
        'the service listens on a wildcard address and answers from another source', fix: [
        `bind the service to ${backend.address} itself (dnsmasq: --bind-interfaces --listen-address=${backend.address})`,
      ] });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ detail: `probe ${err.code}` }));
    socket.send(probe, backend.port, backend.address);
  });
}

export function formatResults(results: readonly CheckResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${r.ok ? 'OK  ' : 'FAIL'}  ${r.name}${r.detail ? `: ${r.detail}` : ''}`);
    // Commands get a "fix:" each; the recipe's comment lines are indented under them.
    if (!r.ok) for (const fix of r.fix ?? []) lines.push(fix.startsWith('#') ? `           ${fix}` : `      fix: ${fix}`);
  }
  const failed = results.filter((r) => !r.ok).length;
  lines.push(failed === 0 ? `all ${results.length} checks passed` : `${failed} of ${results.length} checks failed`);
  return lines.join('\n') + '\n';
}
