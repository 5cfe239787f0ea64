// What the lab's peer processes (tools.ts, udp-tools.ts) share: their report
// format and their address arguments.

/** One JSON object a line on stdout: what tests and the demo parse. */
export function print(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** "192.0.2.1:80" or "[2001:db8::1]:80" (lab arguments are always well formed). */
export function splitHostPort(spec: string): { host: string; port: number } {
  const cut = spec.lastIndexOf(':');
  return { host: spec.slice(0, cut).replace(/^\[|\]$/g, ''), port: Number(spec.slice(cut + 1)) };
}
