#!/usr/bin/env node
// Entry point: argv -> command -> exit status. Operator errors are one line on
// stderr (exit 2 for usage, 1 otherwise), never a stack trace.
import { ConfigError, describeError, echo, ECHO_LIMIT } from './errors';
import {
  RUN_FLAGS, ROUTES_FLAGS, DOCTOR_FLAGS, RunOptions, ParsedValues, parseFlags, buildRunOptions, buildRoutesConfig,
  checkAgainstHost, usage,
} from './config';
import { assertSupportedPlatform } from './sys/platform';

const RUN_USAGE = 'relay [--proto tcp|udp|tcp,udp] --listen ADDR:PORT --backend ADDR:PORT [options]\n' +
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
  const values = parseFlags(argv, RUN_FLAGS);
  if (values.help) {
    process.stdout.write(usage(RUN_USAGE, RUN_FLAGS) + RUN_HELP_MORE);
    return 0;
  }
  const options = await runOptionsFrom(values);
  if (values.check) {
    const passed = await runChecks(options);
    if (!passed && !values['check-continue']) {
      process.stderr.write("relay: not starting: a check failed (fix it, or pass --check-continue)\n");
      return 1;
    }
  }
  const { runRelay } = await import('./run');
  await runRelay(options.run);
  return -1; // keep running until a signal
}

async function doctorCommand(argv: string[]): Promise<number> {
  const values = parseFlags(argv, DOCTOR_FLAGS);
  if (values.help) {
    process.stdout.write(usage('relay doctor [the same options as a run] [--probe-source ADDR]', DOCTOR_FLAGS));
    return 0;
  }
  return (await runChecks(await runOptionsFrom(values))) ? 0 : 1;
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
  return routes.routesCommand(action, buildRoutesConfig(values));
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
