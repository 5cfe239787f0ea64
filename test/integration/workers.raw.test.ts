// The UDP suite of workers.test.ts against --udp-engine raw.
import './raw-engine';
import './workers.test';
