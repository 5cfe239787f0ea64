// Imported first by a twin test file (NAME.raw.test.ts): the UDP suite of
// NAME.test.ts then runs against --udp-engine raw (see lab-fixture's UDP_ENGINE).
process.env.RELAY_TEST_UDP_ENGINE = 'raw';
