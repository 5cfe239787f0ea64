// The socketless UDP path's kernel half, alone (issue 15), for the lab: run in
// the relay namespace, it sends one datagram from each of many client ports
// (the client's own address) to a backend through one raw socket, and reads
// the replies that an nftables tproxy rule steers onto one receive socket.
// It prints one line: {"event":"done", sent, sendErrors, replies, matched,
// fdsOpen, fdsEnd}: matched counts replies from the backend, to a client
// address and port that sent, with the payload that port sent.
//
//   node raw-udp-probe.js --backend ADDR:PORT --receive ADDR:PORT --client ADDR
//     [--first-port 40000] [--ports 100] [--timeout 3000] [--mark N (SO_MARK on the raw socket)]
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { print, splitHostPort } from './peer-io';
import { RawUdpSender, TproxyReceiver, endpointKey, type EndpointKey } from '../sys/raw-udp';
import { familyOf } from '../sys/sockaddr';

const { values } = parseArgs({ options: {
  backend: { type: 'string' }, receive: { type: 'string' }, client: { type: 'string' },
  'first-port': { type: 'string', default: '40000' }, ports: { type: 'string', default: '100' },
  timeout: { type: 'string', default: '3000' }, mark: { type: 'string', default: '0' },
} });

const backend = splitHostPort(values.backend ?? '');
const backendKey = endpointKey(backend.host, backend.port);
const receiveOn = splitHostPort(values.receive ?? '');
const client = values.client ?? '';
const firstPort = Number(values['first-port']);
const ports = Math.min(Number(values.ports), 20_000);
const fds = () => fs.readdirSync('/proc/self/fd').length;

const expected = new Map<EndpointKey, string>();
let replies = 0;
let matched = 0;
const receiver = new TproxyReceiver({ address: receiveOn.host, port: receiveOn.port }, (datagram, from, to) => {
  replies++;
  if (from === backendKey && expected.get(to) === datagram.toString()) {
    expected.delete(to);
    matched++;
  }
  if (expected.size === 0) finish();
});
const sender = new RawUdpSender(familyOf(client), { mark: Number(values.mark) });
receiver.start();
const fdsOpen = fds();

let sent = 0;
let sendErrors = 0;
for (let i = 0; i < ports; i++) {
  const port = firstPort + i;
  const payload = `probe ${client} ${port}`;
  expected.set(endpointKey(client, port), payload);
  if (sender.send({ address: client, port }, { address: backend.host, port: backend.port }, Buffer.from(payload)) === 0) sent++;
  else sendErrors++;
}
const timer = setTimeout(finish, Number(values.timeout));

function finish(): void {
  clearTimeout(timer);
  print({ event: 'done', sent, sendErrors, replies, matched, fdsOpen, fdsEnd: fds() });
  sender.close();
  receiver.close();
  setTimeout(() => process.exit(0), 50);
}
