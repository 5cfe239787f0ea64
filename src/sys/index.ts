export * from './transparent';
export { encodeSockaddr, familyOf, type Family } from './sockaddr';
