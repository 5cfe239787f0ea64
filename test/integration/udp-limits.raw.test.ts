// The UDP suite of udp-limits.test.ts against --udp-engine raw.
import './raw-engine';
import './udp-limits.test';
