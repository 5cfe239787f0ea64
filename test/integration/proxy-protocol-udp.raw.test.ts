// The UDP suite of proxy-protocol-udp.test.ts against --udp-engine raw.
import './raw-engine';
import './proxy-protocol-udp.test';
