// The UDP suite of udp-mismatch.test.ts against --udp-engine raw.
import './raw-engine';
import './udp-mismatch.test';
