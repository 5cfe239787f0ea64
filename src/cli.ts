#!/usr/bin/env node
// Entry point: argv -> command -> exit status. Operator errors are one line on
// stderr (exit 2 for usage, 1 otherwise), never a stack trace.
import { ConfigError, describeError, echo, ECHO_LIMIT } from './errors';
import {
  RUN_FLAGS, ROUTES_FLAGS, DOCTOR_FLAGS, RELOAD_FLAGS, WITH_CONFIG_FLAGS, RunOptions, ParsedValues, parseFlags,
  buildRunOptions, buildRoutesConfig, checkAgainstHost, usage, parseLogLevel, buildAdminOptions,
} from './config';
import type { FileConfig } from './config-file';
import type { LogLevel } from './config';
import { assertLimitsSplit, configTextFromPrimary, parseWorkers, workerRole } from './workers';
import type { PrimaryOptions } from './workers';
import { assertSupportedPlatform } from './sys/platform';

// The raw UDP engine keeps four of libuv's threads blocked for good (a
// recvmmsg per receive socket, a poll per error queue: koffi's async calls run
// on libuv's pool, four threads unless told). Eight leave Node's own work (fs,
// dns) the four it expects; a smaller size given is raised (libuv makes an
// empty or bad one a pool of 1). libuv reads this once, when the pool first
// starts, which nothing before this line does; a relay that never uses the
// pool starts none of them.
if (!(Number(process.env.UV_THREADPOOL_SIZE) >= 8)) process.env.UV_THREADPOOL_SIZE = '8';

const RUN_USAGE = 'relay [--proto tcp|udp|tcp,udp] --listen ADDR:PORT --backend ADDR:PORT [options]\n' +
  '       relay --config FILE [--check-config] [--check] [--log-level LEVEL]\n' +
  '       relay reload [--config FILE] [--pid-file FILE]\n' +
  '       relay routes print|apply|check|remove [options]\n' +
  '       relay doctor [the same options as a run]\n' +
  '       relay demo';

/** Where the rest is: the routes flags (--relay-address for the backend recipes) are not a run's. */
const RUN_HELP_MORE = '\nMore: relay routes --help (the relay host\'s routes, and --relay-address for the backend recipes),\n' +
  '      relay doctor --help, relay demo --help; docs/quickstart.md for a first deployment.\n';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // Before anything loads koffi or runs a command: one line on a platform
  // relay's structs were not written for, or under --permission.
  if (!argv.includes('--help') && !argv.includes('-h')) assertSupportedPlatform();
  if (command === 'routes') return routesCommand(rest);
  if (command === 'demo') return demoCommand(rest);
  if (command === 'doctor') return doctorCommand(rest);
  if (command === 'reload') return reloadCommand(rest);
  const values = parseFlags(argv, RUN_FLAGS);
  if (values.help) {
    process.stdout.write(usage(RUN_USAGE, RUN_FLAGS) + RUN_HELP_MORE);
    return 0;
  }
  if (values.config !== undefined) return configRun(values);
  if (values['check-config']) throw new ConfigError('--check-config checks a configuration file: give --config FILE');
  const options = await runOptionsFrom(values);
  const workers = parseWorkers(values.workers);
  const pidFile = typeof values['pid-file'] === 'string' ? values['pid-file'] : undefined;
  const admin = buildAdminOptions(values);
  const role = workerRole();
  if (values.check && !role && !(await checksAllowStart([options], values))) return 1;
  if (workers > 1 && !role) {
    assertLimitsSplit([options.run], workers);
    return startPrimary({ count: workers, logLevel: options.run.logLevel, pidFile, admin });
  }
  const { runRelay } = await import('./run');
  await runRelay({
    services: [{ name: 'default', run: options.run }],
    logLevel: options.run.logLevel,
    pidFile: role ? undefined : pidFile,
    worker: role,
    admin,
  });
  return -1; // keep running until a signal
}

/**
 * --workers N: this process supervises N copies of itself (src/workers.ts)
 * and serves nothing but the admin listener, for the whole relay.
 */
async function startPrimary(options: Omit<PrimaryOptions, 'argv' | 'entry'>): Promise<number> {
  const { runPrimary } = await import('./workers');
  await runPrimary({ ...options, argv: process.argv.slice(2), entry: __filename });
  return -1;
}

/** --check: doctor's checks first; false (after saying why) when relay must not start. */
async function checksAllowStart(options: RunOptions[], values: ParsedValues): Promise<boolean> {
  let passed = true;
  for (const o of options) passed = (await runChecks(o)) && passed;
  if (!passed && !values['check-continue']) {
    process.stderr.write("relay: not starting: a check failed (fix it, or pass --check-continue)\n");
    return false;
  }
  return true;
}

/** `relay --config FILE`: every service of the file, and SIGHUP reads it again. */
async function configRun(values: ParsedValues): Promise<number> {
  const path = String(values.config);
  const given = Object.keys(values).filter((k) => values[k] !== undefined && !WITH_CONFIG_FLAGS.includes(k));
  if (given.length > 0) {
    throw new ConfigError(`--config with ${given.map((k) => `--${k}`).join(', ')}: the file is the one source of truth; ` +
      `put ${given.length > 1 ? 'them' : 'it'} in the file (a service's keys in its [[service]] table)`);
  }
  // A worker starts from the text the primary holds: the file as it was at the last start or valid reload.
  const role = workerRole();
  const { readConfigText } = await import('./config-file');
  const text = (role ? configTextFromPrimary() : undefined) ?? readConfigText(path);
  const file = await loadCheckedFile(path, text);
  if (values['check-config']) {
    const { formatEffective } = await import('./config-file');
    process.stdout.write(formatEffective(file));
    return 0;
  }
  if (values.check && !role && !(await checksAllowStart(serviceOptions(file), values))) return 1;
  const flagLevel = values['log-level'] !== undefined ? parseLogLevel(values['log-level']) : undefined;
  const logLevel = flagLevel ?? file.global.logLevel;
  if (file.global.workers > 1 && !role) {
    return startPrimary({ count: file.global.workers, logLevel, pidFile: file.global.pidFile, configPath: path, admin: file.global.admin,
      config: { path, text, check: async (next) => { await loadCheckedFile(path, next); } } });
  }
  const { runRelay } = await import('./run');
  await runRelay({
    services: file.services,
    logLevel,
    logLevelFixed: flagLevel !== undefined,
    configPath: path,
    pidFile: role ? undefined : file.global.pidFile,
    worker: role,
    reread: () => loadCheckedFile(path),
    admin: file.global.admin,
  });
  return -1;
}

/**
 * A configuration file (or the text given for it), refused as a run's flags
 * would be if a service cannot work on this host.
 */
async function loadCheckedFile(path: string, text?: string): Promise<FileConfig> {
  const { parseConfigText, readConfigText } = await import('./config-file');
  const file = parseConfigText(text ?? readConfigText(path), path);
  const { readHostFacts } = await import('./routes');
  const facts = readHostFacts();
  for (const [i, options] of serviceOptions(file).entries()) {
    try {
      checkAgainstHost(options, facts);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      throw new ConfigError(`${path}: service[${i}] "${file.services[i].name}": ${err.message.replace(/--([a-z][a-z0-9-]*)/g, '$1')}`);
    }
  }
  return file;
}

/** Each service's options as doctor and the host checks take them: its own data path, the file's routing keys. */
function serviceOptions(file: FileConfig): RunOptions[] {
  return file.services.map((s) => ({
    ...file.global.probes,
    run: s.run,
    routes: { ...file.global.routes, backends: s.run.backends.map((b) => b.endpoint),
      ...(s.run.mapIpv4Prefix ? { mapIpv4Prefixes: [s.run.mapIpv4Prefix] } : {}) },
  }));
}

/** `relay reload`: check the file (when given) and send SIGHUP to the relay the pid file names. */
async function reloadCommand(argv: string[]): Promise<number> {
  const values = parseFlags(argv, RELOAD_FLAGS);
  if (values.help) {
    process.stdout.write(usage('relay reload [--config FILE] [--pid-file FILE]', RELOAD_FLAGS));
    return 0;
  }
  const { DEFAULT_PID_FILE } = await import('./config');
  const file = typeof values.config === 'string' ? await loadCheckedFile(values.config) : undefined;
  const pidFile = typeof values['pid-file'] === 'string' ? values['pid-file'] : file?.global.pidFile ?? DEFAULT_PID_FILE;
  const { signalRelay } = await import('./reload');
  const pid = signalRelay(pidFile);
  process.stdout.write(`relay: asked relay (pid ${pid}) to reload${file ? ` ${file.path}, which validates` : ''}; ` +
    'its log says what changed\n');
  return 0;
}

async function doctorCommand(argv: string[]): Promise<number> {
  const values = parseFlags(argv, DOCTOR_FLAGS);
  if (values.help) {
    process.stdout.write(usage('relay doctor [the same options as a run | --config FILE] [--probe-source ADDR]', DOCTOR_FLAGS));
    return 0;
  }
  if (typeof values.config !== 'string') return (await runChecks(await runOptionsFrom(values))) ? 0 : 1;
  const file = await loadCheckedFile(values.config);
  let passed = true;
  for (const [i, options] of serviceOptions(file).entries()) {
    process.stdout.write(`${i > 0 ? '\n' : ''}service "${file.services[i].name}":\n`);
    passed = (await runChecks(options)) && passed;
  }
  return passed ? 0 : 1;
}

/** A run's (and doctor's) options, refused if they cannot work on this host. */
async function runOptionsFrom(values: ParsedValues): Promise<RunOptions> {
  const options = buildRunOptions(values);
  const { readHostFacts } = await import('./routes');
  checkAgainstHost(options, readHostFacts());
  return options;
}

/** Run doctor's checks, print one line each; true when none FAILed (a WARN is printed, and passes). */
async function runChecks(options: RunOptions): Promise<boolean> {
  const { runDoctor, formatResults, anyFailed } = await import('./doctor');
  const results = await runDoctor(options);
  process.stdout.write(formatResults(results));
  return !anyFailed(results);
}

async function routesCommand(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  const routesUsage = 'relay routes print|apply|check|remove [options]';
  const values = parseFlags(rest, ROUTES_FLAGS);
  if (action === undefined) throw new ConfigError('routes needs an action: print, apply, check or remove');
  if (values.help || action === '--help' || action === '-h') {
    process.stdout.write(usage(routesUsage, ROUTES_FLAGS));
    return 0;
  }
  const routes = await import('./routes');
  if (typeof values.config !== 'string') return routes.routesCommand(action, buildRoutesConfig(values));
  const given = Object.keys(values).filter((k) => values[k] !== undefined && !['config', 'relay-address'].includes(k));
  if (given.length > 0) {
    throw new ConfigError(`--config with ${given.map((k) => `--${k}`).join(', ')}: the file gives the backends and routing keys`);
  }
  const { loadConfigFile } = await import('./config-file');
  const file = loadConfigFile(values.config);
  const backends = [...new Set(file.services.flatMap((s) => s.run.backends.map((b) => `${b.endpoint.family === 6 ? `[${b.endpoint.address}]` : b.endpoint.address}:${b.endpoint.port}`)))];
  const prefixes = [...new Set(file.services.flatMap((s) => (s.run.mapIpv4Prefix ? [s.run.mapIpv4Prefix.text] : [])))];
  return routes.routesCommand(action, buildRoutesConfig({ ...file.global.values, backend: backends, 'relay-address': values['relay-address'],
    'map-ipv4-prefix': prefixes }));
}

async function demoCommand(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write('usage: relay demo\n\nBuilds a network-namespace lab (client, relay, backend), ' +
      'relays TCP and UDP over IPv4 and IPv6 and shows what the backend saw. Needs root; removes everything on exit.\n');
    return 0;
  }
  if (argv.length > 0) throw new ConfigError(`demo takes no arguments: got '${echo(argv.join(' '))}'`);
  const { runDemo } = await import('./demo');
  return runDemo();
}

// `relay routes check | head` closes our stdout early: that is not an error.
// Any other failed write (`> /dev/full`) is one line and exit 1.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  process.stderr.write(`relay: cannot write to stdout: ${err.code ?? echo(err.message)}\n`);
  process.exit(1);
});

main(process.argv.slice(2)).then(
  (status) => {
    if (status >= 0) process.exitCode = status;
  },
  (err) => {
    // The final guard: whatever a message echoes stays one line, and no escape reaches the terminal.
    process.stderr.write(`relay: ${echo(describeError(err), 4 * ECHO_LIMIT)}\n`);
    if (err instanceof ConfigError) {
      process.stderr.write("Try 'relay --help'.\n");
      process.exitCode = 2;
    } else {
      process.exitCode = 1;
    }
  },
);
