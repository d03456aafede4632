"""The test kits: helpers the tests share (running the CLI, seeding the emulator, S3 faults,
TLS, the in-process API double); not tests themselves."""
