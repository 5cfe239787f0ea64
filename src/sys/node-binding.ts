// The one place relay calls process.binding: Node's allow-listed internal
// bindings for its libuv handles (see tcp-handle.ts for why). Each user checks
// the members it needs at first use, so a Node.js that changed them fails
// with one line naming what is missing, never with a crash later.
export function processBinding(name: 'tcp_wrap' | 'stream_wrap' | 'udp_wrap'): Record<string, unknown> {
  return (process as unknown as { binding(name: string): Record<string, unknown> }).binding(name);
}

/** The line to fail with when a binding lacks members relay uses. */
export function missingBindingError(what: string, missing: string[]): Error {
  return new Error(`this Node.js (${process.version}) lacks the ${what} API relay uses (${missing.join(', ')}): ` +
    'run relay on a Node.js release that package.json engines names');
}

/** The methods of prefix's prototype that constructor lacks, named prefix.method. */
export function missingMethods(constructor: unknown, prefix: string, names: string[]): string[] {
  const prototype = (constructor as { prototype?: Record<string, unknown> } | undefined)?.prototype;
  return names.filter((name) => typeof prototype?.[name] !== 'function').map((name) => `${prefix}.${name}`);
}
