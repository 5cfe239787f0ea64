// ReplyBatch and ReceiveBatch against the real kernel, in a namespace of
// their own. One reply batch that outgrows both its message slots (64) and
// its data space (256 KiB) within a single tick must still deliver every
// datagram, intact, to the address each was queued for; a receive batch must
// read queued datagrams of every size, each with its sender's address and port.
import t from 'tap';
import { Lab } from '../../src/lab/netns';
import { distFile } from '../../src/lab/topology';
import { canRunLab, SKIP_REASON } from './lab-fixture';

/** Runs inside the namespace: queue 8 datagrams of 65,507 bytes and 70 small ones in one tick, count what arrives. */
const SCRIPT = `
const dgram = require('node:dgram');
const sys = require(${JSON.stringify(distFile('sys', 'index.js'))});
const sizes = [...Array(8).fill(65507), ...Array(70).fill(100)];
const receivers = [40001, 40002].map((port) => {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  socket.bind(port, '127.0.0.1');
  return socket;
});
const got = [];
receivers.forEach((socket, r) => socket.on('message', (msg) => {
  const i = msg[0] + 256 * msg[1];
  got.push({ i, r, intact: msg.length === sizes[i] && msg.every((b, k) => k < 2 || b === (i + k) % 251) });
}));
let dropped = 0;
setTimeout(() => {
  const sender = sys.openUdpListener('127.0.0.1', 40000, 1024 * 1024);
  const batch = new sys.ReplyBatch(sender.fd, () => dropped++);
  const targets = [40001, 40002].map((port) => sys.encodeSockaddr('127.0.0.1', port));
  sizes.forEach((size, i) => {
    const datagram = Buffer.alloc(size);
    for (let k = 2; k < size; k++) datagram[k] = (i + k) % 251;
    datagram[0] = i % 256; datagram[1] = Math.floor(i / 256);
    batch.add(datagram, targets[i % 2]);
  });
  setTimeout(() => {
    console.log(JSON.stringify({ sent: sizes.length, dropped, got }));
    process.exit(0);
  }, 1000);
}, 200);
`;

t.test('a batch larger than its slots and its data space arrives whole', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`rtbatch${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const ns = lab.addNamespace('host');
  const proc = lab.spawn(ns, [process.execPath, '-e', SCRIPT]);
  const line = await proc.waitFor(/\{"sent".*\}/, 15_000);
  const result = JSON.parse(line) as { sent: number; dropped: number; got: { i: number; r: number; intact: boolean }[] };
  t.equal(result.dropped, 0, 'the kernel refused nothing');
  t.equal(result.got.length, result.sent, 'every datagram arrived');
  t.same([...new Set(result.got.map((g) => g.i))].sort((a, b) => a - b), [...Array(result.sent).keys()], 'each exactly once');
  t.ok(result.got.every((g) => g.intact), 'each intact, with its own size and bytes');
  t.ok(result.got.every((g) => g.r === g.i % 2), 'each at the address it was queued for');
});

/**
 * Runs inside the namespace: two senders queue 20 datagrams (sizes up to the
 * family's largest) before the listener reads; drain until empty. Each sender
 * also sends one datagram to a plain dgram socket, whose rinfo is how Node
 * writes the sender's address: the text sessions are keyed by.
 */
function receiveScript(host: string, senderHosts: string[], largest: number): string {
  return `
const dgram = require('node:dgram');
const sys = require(${JSON.stringify(distFile('sys', 'index.js'))});
const type = ${JSON.stringify(host.includes(':') ? 'udp6' : 'udp4')};
const sizes = Array.from({ length: 20 }, (_, i) => [0, 1, 100, 1472, ${largest}][i % 5]);
const listener = sys.openUdpListener(${JSON.stringify(host)}, 40100, 4 * 1024 * 1024);
const batch = new sys.ReceiveBatch();
const plain = dgram.createSocket(type);
plain.bind(40103, ${JSON.stringify(host)});
const nodeSaw = {};
plain.on('message', (msg, rinfo) => { nodeSaw[rinfo.port] = rinfo.address; });
const senders = ${JSON.stringify(senderHosts)}.map((address, k) => {
  const socket = dgram.createSocket(type);
  socket.bind(40101 + k, address);
  return socket;
});
let queued = 0;
setTimeout(() => {
  senders.forEach((socket) => socket.send(Buffer.from('who'), 40103, ${JSON.stringify(host)}));
  sizes.forEach((size, i) => {
    const datagram = Buffer.alloc(size, i + 1);
    senders[i % 2].send(datagram, 40100, ${JSON.stringify(host)}, () => { queued++; });
  });
  setTimeout(() => {
    const got = [];
    let reads = 0;
    while (reads < 10 && batch.drain(listener.fd, (datagram, address, port) => got.push({ size: datagram.length,
      fill: datagram.length ? datagram[0] : 0, same: datagram.every((b) => b === datagram[0]), address, port })) > 0) reads++;
    console.log(JSON.stringify({ queued, reads, sizes, got, nodeSaw }));
    process.exit(0);
  }, 500);
}, 300);
`;
}

interface ReceiveResult {
  queued: number;
  reads: number;
  sizes: number[];
  got: { size: number; fill: number; same: boolean; address: string; port: number }[];
  nodeSaw: Record<string, string>;
}

const RECEIVE_CASES = [
  { name: 'IPv4', host: '127.0.0.1', senders: ['127.0.0.1', '127.0.0.2'], largest: 65507, add: [] as string[] },
  // Senders whose addresses Node writes with "::" in the middle and at the end of a prefix.
  { name: 'IPv6', host: '::1', senders: ['2001:db8:0:0:1::5', '2001:db8::7'], largest: 65487,
    add: ['2001:db8:0:0:1::5/128', '2001:db8::7/128'] },
];

for (const c of RECEIVE_CASES) {
  t.test(`a receive batch reads queued ${c.name} datagrams whole, with their senders as Node writes them`,
    { skip: !canRunLab && SKIP_REASON }, async (t) => {
      const lab = new Lab(`rtrecv${c.name === 'IPv4' ? 4 : 6}${process.pid % 100000}`);
      t.teardown(() => lab.teardown());
      const ns = lab.addNamespace('host');
      for (const address of c.add) ns.ip('-6', 'addr', 'add', address, 'dev', 'lo', 'nodad');
      const proc = lab.spawn(ns, [process.execPath, '-e', receiveScript(c.host, c.senders, c.largest)]);
      const line = await proc.waitFor(/\{"queued".*\}/, 15_000);
      const result = JSON.parse(line) as ReceiveResult;
      t.equal(result.queued, 20, 'all 20 were sent before any was read');
      t.ok(result.reads >= 2, `read in ${result.reads} recvmmsg calls of at most 16`);
      t.equal(result.got.length, 20, 'every datagram was read');
      t.equal(result.got.filter((g) => g.size === 0).length, 4, 'the four empty datagrams too');
      const wrong = result.got.filter((g) => {
        const i = g.size === 0 ? undefined : g.fill - 1;
        const port = g.port === 40101 || g.port === 40102 ? g.port : -1;
        return (i !== undefined && (g.size !== result.sizes[i] || !g.same || port !== 40101 + (i % 2))) ||
          g.address !== result.nodeSaw[String(port)];
      });
      t.same(wrong, [], 'each with its own size and bytes, its sender\'s port, and the address text Node gives');
      t.same(Object.keys(result.nodeSaw).sort(), ['40101', '40102'], 'Node saw both senders');
    });
}
