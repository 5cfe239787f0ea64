// What the raw UDP engine (--udp-engine raw, protocols/udp-raw.ts) and relay's
// routes (src/routes.ts) must agree on: the mark its raw sockets put on what
// they send, which relay's nftables table copies into conntrack to know the
// replies, and the port tproxy delivers those replies to.

/** SO_MARK of the raw engine's sockets; must differ from --fwmark (0x5e1a by default). */
export const RAW_ENGINE_MARK = 0x5e1b;
/**
 * Where tproxy delivers the replies: above the kernel's default ephemeral
 * range (32768-60999), so no connect() on this host picks it.
 */
export const RAW_ENGINE_PORT = 61_000;
