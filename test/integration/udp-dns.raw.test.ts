// The UDP suite of udp-dns.test.ts against --udp-engine raw.
import './raw-engine';
import './udp-dns.test';
