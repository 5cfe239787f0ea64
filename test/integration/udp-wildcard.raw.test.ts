// The UDP suite of udp-wildcard.test.ts against --udp-engine raw.
import './raw-engine';
import './udp-wildcard.test';
