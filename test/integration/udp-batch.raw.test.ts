// The UDP suite of udp-batch.test.ts against --udp-engine raw.
import './raw-engine';
import './udp-batch.test';
