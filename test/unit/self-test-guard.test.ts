// The start-up self-test against a Node.js that behaves differently: a stub
// binding (installed through node-binding.ts, before any handle loads its
// binding) changes one behaviour of Node's own handles at a time, and the
// self-test must refuse with the line that names it. Loopback only; no root.
import t from 'tap';
import { nodeBindings, substituteBindings, type BindingName } from '../../src/sys/node-binding';
import { runSelfTest } from '../../src/sys/self-test';
import { RelayError, describeError } from '../../src/errors';

type Fault =
  | 'onread renamed' | 'onconnection renamed' | 'connect never completes'
  | 'write always async' | 'write never async' | 'TCP bytes altered'
  | 'close keeps the fd' | 'close while a shutdown is pending keeps the fd' | 'reset keeps the fd'
  | 'onmessage renamed' | 'UDP bytes altered' | 'send refused' | 'UDP fd wrong';

let fault: Fault | undefined;
/** Handles a fault left open, closed for real once their test is over. */
const leaked: (() => void)[] = [];

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type RawClass = new (...args: unknown[]) => Raw;

substituteBindings((name: BindingName) => {
  const real = nodeBindings(name);
  if (name === 'tcp_wrap') return { ...real, TCP: wrapClass(real.TCP as RawClass, patchTcp) };
  if (name === 'udp_wrap') return { ...real, UDP: wrapClass(real.UDP as RawClass, patchUdp) };
  return real;
});

/** A constructor whose instances are Node's own, patched; its prototype stays Node's (for the member check). */
function wrapClass(Real: RawClass, patch: (raw: Raw) => Raw): RawClass {
  const Wrapped = function (this: unknown, ...args: unknown[]) {
    return patch(new Real(...args));
  } as unknown as RawClass;
  Wrapped.prototype = Real.prototype;
  return Wrapped;
}

/** A property's descriptor from the prototype chain (Node's accessors live there). */
function inherited(raw: Raw, name: string): PropertyDescriptor {
  for (let proto = Object.getPrototypeOf(raw); proto; proto = Object.getPrototypeOf(proto)) {
    const descriptor = Object.getOwnPropertyDescriptor(proto, name);
    if (descriptor) return descriptor;
  }
  throw new Error(`no ${name} on the prototype chain`);
}

function patchTcp(raw: Raw): Raw {
  const proto = Object.getPrototypeOf(raw);
  let shutdownPending = false;
  for (const method of ['connect', 'connect6'] as const) {
    raw[method] = function (req: Raw, address: string, port: number) {
      if (fault === 'connect never completes') req.oncomplete = () => {};
      return proto[method].call(this, req, address, port);
    };
  }
  raw.writeBuffer = function (req: Raw, data: Buffer) {
    const status = proto.writeBuffer.call(this, req, data);
    const stream = nodeBindings('stream_wrap');
    const state = stream.streamBaseState as Int32Array;
    if (fault === 'write always async') state[stream.kLastWriteWasAsync as number] = 1;
    if (fault === 'write never async') state[stream.kLastWriteWasAsync as number] = 0;
    return status;
  };
  raw.shutdown = function (req: Raw) {
    // As Node's TCPWrap::Reset once did: a handle with a shutdown queued is marked closed, and left open.
    shutdownPending = true;
    const done = req.oncomplete;
    req.oncomplete = function (this: Raw, status: number) {
      shutdownPending = false;
      done.call(this, status);
    };
    return proto.shutdown.call(this, req);
  };
  raw.close = function (onClosed?: () => void) {
    if (fault === 'close keeps the fd' || (fault === 'close while a shutdown is pending keeps the fd' && shutdownPending)) {
      leaked.push(() => proto.close.call(this));
      return;
    }
    proto.close.call(this, onClosed);
  };
  raw.reset = function (onClosed?: () => void) {
    if (fault === 'reset keeps the fd') {
      leaked.push(() => proto.close.call(this));
      return 0;
    }
    return proto.reset.call(this, onClosed);
  };
  // onread is an accessor in C++ (it shows as a data property on the
  // prototype): what relay sets is what Node calls. The stub's own accessor
  // takes relay's function and hands Node a wrapper, through the prototype's.
  let relayOnread: unknown;
  const defineOnread = (): void => {
    Object.defineProperty(raw, 'onread', {
      configurable: true,
      get: () => relayOnread,
      set(fn: (this: Raw, chunk?: ArrayBuffer) => void) {
        relayOnread = fn;
        delete raw.onread;
        raw.onread = function (this: Raw, chunk?: ArrayBuffer) {
          if (fault === 'onread renamed') return; // Node calls a name relay does not set
          if (fault === 'TCP bytes altered' && chunk) {
            const stream = nodeBindings('stream_wrap');
            const offset = (stream.streamBaseState as Int32Array)[stream.kArrayBufferOffset as number];
            new Uint8Array(chunk)[offset] ^= 0xff;
          }
          fn.call(this, chunk);
        };
        defineOnread();
      },
    });
  };
  defineOnread();
  // onconnection is looked up by name when a client arrives.
  let relayOnconnection: ((status: number, client?: Raw) => void) | undefined;
  Object.defineProperty(raw, 'onconnection', {
    configurable: true,
    set: (fn) => { relayOnconnection = fn; },
    get: () => (status: number, client?: Raw) => {
      if (fault === 'onconnection renamed') {
        client?.close();
        return;
      }
      relayOnconnection?.(status, client && patchTcp(client));
    },
  });
  return raw;
}

function patchUdp(raw: Raw): Raw {
  const proto = Object.getPrototypeOf(raw);
  raw.send = function (...args: unknown[]) {
    if (fault === 'send refused') return -11; // EAGAIN
    return proto.send.apply(this, args);
  };
  const fd = inherited(raw, 'fd');
  Object.defineProperty(raw, 'fd', {
    configurable: true,
    get: () => fd.get!.call(raw) + (fault === 'UDP fd wrong' ? 1000 : 0),
  });
  let relayOnmessage: ((nread: number, handle: Raw, datagram?: Buffer, from?: unknown) => void) | undefined;
  Object.defineProperty(raw, 'onmessage', {
    configurable: true,
    set: (fn) => { relayOnmessage = fn; },
    get: () => (nread: number, handle: Raw, datagram?: Buffer, from?: unknown) => {
      if (fault === 'onmessage renamed') return;
      if (fault === 'UDP bytes altered' && datagram && datagram.length > 0) datagram[datagram.length - 1] ^= 0xff;
      relayOnmessage?.(nread, handle, datagram, from);
    },
  });
  return raw;
}

// Long enough for a loaded machine running every test file at once; the
// cases that wait for a callback that never comes take this long each.
const TIMEOUT_MS = 1500;

t.test('with Node.js as it is, the self-test passes (through the substituted binding)', async (t) => {
  fault = undefined;
  const result = await runSelfTest({ timeoutMs: 5000 });
  t.ok(result.families.includes(4), 'tested over 127.0.0.1');
  t.ok(result.ms > 0 && result.ms < 5000, `took ${result.ms.toFixed(1)} ms`);
});

const cases: [Fault, RegExp][] = [
  ['onread renamed', /: TCP4 read: 1000 bytes did not arrive \(onread did not run\) within 1500 ms$/],
  ['onconnection renamed', /: TCP4 accept: the listener's callback \(onconnection\) did not run within 1500 ms$/],
  ['connect never completes', /: TCP4 connect: its callback \(oncomplete\) did not run within 1500 ms$/],
  ['write always async', /: TCP4 write: 1000 bytes on an idle connection were not taken at once/],
  ['write never async', /: TCP4 write: \d+ bytes to a peer that is not reading were all taken at once/],
  ['TCP bytes altered', /: TCP4 read: the bytes arrived altered \(first at byte 0 of 1000\)$/],
  ['close keeps the fd', /: TCP4 close: 0 sockets were released, not 1 \(\d+ open before, \d+ after\)$/],
  ['close while a shutdown is pending keeps the fd', /: TCP4 reset while a shutdown is pending: 0 sockets were released, not 1/],
  ['reset keeps the fd', /: TCP4 reset: 0 sockets were released, not 1/],
  ['onmessage renamed', /: UDP4 receive: onmessage did not run within 1500 ms$/],
  ['UDP bytes altered', /: UDP4 receive: the bytes arrived altered \(first at byte 699 of 700\)$/],
  ['send refused', /: UDP4 send: a 700-byte datagram was refused$/],
  ['UDP fd wrong', /: UDP4 listener: its fd \(\d+\) is not an open socket$/],
];

for (const [name, line] of cases) {
  t.test(`${name}: the self-test refuses with the line that names it`, async (t) => {
    fault = name;
    t.teardown(() => {
      fault = undefined;
      for (const close of leaked.splice(0)) close();
    });
    const err = await runSelfTest({ timeoutMs: TIMEOUT_MS }).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof RelayError, 'a RelayError');
    const error = err as RelayError;
    t.equal(error.code, 'ERR_SELF_TEST');
    t.match(error.message, new RegExp(`^Node\\.js ${process.version.replace(/\./g, '\\.')} failed relay's start-up self-test: `),
      'names the Node.js version');
    t.match(error.message, line, error.message);
    t.match(error.hint, /tested on Node\.js 20, 22, 24 and 26/);
    t.notMatch(describeError(error), /\n/, 'one line');
  });
}

t.test('after the faults, Node.js as it is still passes', async (t) => {
  fault = undefined;
  await runSelfTest({ timeoutMs: 5000 });
  t.pass('passed');
});
