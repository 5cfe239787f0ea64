// The UDP suite of udp-basics.test.ts against --udp-engine raw.
import './raw-engine';
import './udp-basics.test';
