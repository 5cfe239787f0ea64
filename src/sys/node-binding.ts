// The one place relay calls process.binding: Node's allow-listed internal
// bindings for its libuv handles (see tcp-handle.ts for why). Each user checks
// the members it needs at first use, so a Node.js that changed them fails
// with one line naming what is missing, never with a crash later; what they
// do is checked by the start-up self-test (self-test.ts).
import { RelayError } from '../errors';

export type BindingName = 'tcp_wrap' | 'stream_wrap' | 'udp_wrap';
export type BindingSource = (name: BindingName) => Record<string, unknown>;

/** Node's own bindings. Under the permission model process.binding throws ERR_ACCESS_DENIED: that becomes one line. */
export const nodeBindings: BindingSource = (name) => {
  try {
    return (process as unknown as { binding(name: string): Record<string, unknown> }).binding(name);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ERR_ACCESS_DENIED') throw permissionModelError();
    throw err;
  }
};

let source: BindingSource = nodeBindings;

/**
 * A binding, from Node (or from the substitute a test installed). Called once
 * per handle module, at its first use: the data path never comes here.
 */
export function processBinding(name: BindingName): Record<string, unknown> {
  return source(name);
}

/**
 * Tests only: serve the bindings from elsewhere (a stub that changes one
 * behaviour of Node's). Takes effect for the handle modules that have not yet
 * loaded theirs, so install it before the first handle is made.
 */
export function substituteBindings(replacement: BindingSource): void {
  source = replacement;
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

/**
 * Node's permission model (--permission, --experimental-permission on 20)
 * denies process.binding whatever is allowed: no --allow-* flag grants it.
 */
export function permissionModelError(): RelayError {
  return new RelayError('ERR_PERMISSION_MODEL',
    `relay cannot run under Node.js's permission model (${process.version}): it needs process.binding ` +
    "for Node's own libuv TCP and UDP handles, which the permission model denies and no --allow-* flag grants " +
    '(and native addons, --allow-addons, for koffi)',
    'start relay without --permission and confine it with systemd instead: docs/systemd/');
}
