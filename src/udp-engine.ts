// What the raw UDP engine (--udp-engine raw, protocols/udp-raw.ts) and relay's
// routes (src/routes.ts) must agree on. Each relay process using the engine
// (each worker, each relay on the host) takes a slot: a mark its raw sockets
// put on what they send, which relay's nftables table copies into the flow's
// conntrack entry, and a port its receive sockets listen on. One rule per
// family then sends a reply to the port of its flow's mark (a map lookup), so
// the reply reaches the process that holds its session.

/** Slots: processes on one host that may run the raw engine at once. */
export const RAW_ENGINE_SLOTS = 64;
/** The mark of slot 0; slot s marks with base + s. Distinct from relay's --fwmark (0x5e1a) and its lookups. */
export const RAW_ENGINE_MARK_BASE = 0x5e1b0000;
/**
 * The receive port of slot 0; slot s listens on base + s. Above the kernel's
 * default ephemeral range (32768-60999), so no connect() on this host picks it.
 */
export const RAW_ENGINE_PORT_BASE = 61_000;

export function rawEngineSlot(slot: number): { mark: number; port: number } {
  return { mark: RAW_ENGINE_MARK_BASE + slot, port: RAW_ENGINE_PORT_BASE + slot };
}

/** The nft map from a flow's conntrack mark to its process's receive port. */
export function rawEnginePortMap(): string {
  const entries = Array.from({ length: RAW_ENGINE_SLOTS }, (_, s) => {
    const { mark, port } = rawEngineSlot(s);
    return `0x${mark.toString(16)} : ${port}`;
  });
  return `{ ${entries.join(', ')} }`;
}
