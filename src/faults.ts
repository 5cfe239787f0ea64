// A test hook: make relay throw at a chosen point, so the torture suite can
// prove that a throw is contained where relay says it is (docs/reliability.md).
//
//   RELAY_TEST_FAULTS=tcp-connection:41001,tcp-listener:41002,udp-session:41003
//
// throws while handling the first chunk a TCP client from source port 41001
// sends (contained: that connection closes), while the listener accepts a TCP
// client from port 41002 (not contained: relay exits non-zero), and while
// handling the backend's first reply to the UDP client from port 41003
// (contained: that session ends). Unset, every call is one comparison.
export type FaultPoint = 'tcp-connection' | 'tcp-listener' | 'udp-session';

const armed: ReadonlySet<string> | undefined = parseFaults(process.env.RELAY_TEST_FAULTS);

function parseFaults(spec: string | undefined): ReadonlySet<string> | undefined {
  if (!spec) return undefined;
  return new Set(spec.split(',').map((entry) => entry.trim()).filter((entry) => entry !== ''));
}

/** Throw if RELAY_TEST_FAULTS arms this point for this client port. */
export function injectFault(point: FaultPoint, clientPort: number): void {
  if (armed !== undefined && armed.has(`${point}:${clientPort}`)) {
    throw new Error(`injected fault: ${point} for client port ${clientPort} (RELAY_TEST_FAULTS)`);
  }
}
