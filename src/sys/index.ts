export * from './transparent';
export { encodeSockaddr, familyOf, type Family } from './sockaddr';
export { getFileLimit, raiseFileLimit, type FileLimit } from './limits';
export { TcpHandle, TcpListener, type ReadHandlers, type FaultOwner } from './tcp-handle';
export { UdpHandle, type DatagramHandlers } from './udp-handle';
export { ReplyBatch, ReceiveBatch } from './udp-batch';
