// The UDP suite of map-prefix.test.ts against --udp-engine raw.
import './raw-engine';
import './map-prefix.test';
