// The UDP torture of torture-udp.test.ts against --udp-engine raw.
import './raw-engine';
import './torture-udp.test';
