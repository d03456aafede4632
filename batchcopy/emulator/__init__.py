"""A local emulator of AWS HealthImaging (service `medical-imaging`, 2023-07-19).

Layout (service semantics apart from the wire format):
    config.py   EmulatorConfig: quotas, time scale, copy durations, faults, auth
    errors.py   modelled service errors (code, HTTP status, message)
    model.py    the service's rules: data stores, image sets, versions, locks,
                the asynchronous copy state machine; no HTTP
    seed.py     synthetic DICOM hierarchies with deterministic ids
    quotas.py   per-operation token buckets (server side)
    faults.py   injected throttles, 5xx, resets, latency, lost responses
    auth.py     optional SigV4 verification, deny lists
    wire.py     restJson1 routing and (de)serialisation built from botocore's model
    server.py   aiohttp app, control routes under /_emulator, start/stop helpers
    cli.py      `batchcopy emulator serve | seed | stats`
    ASSUMPTIONS.md  behaviour the public documentation does not fix

The runner (batchcopy.runner and friends) never imports this package.
"""
