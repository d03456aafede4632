"""A local emulator of AWS HealthImaging (service `medical-imaging`, 2023-07-19).

Layout (service semantics apart from the wire format):
    config.py       EmulatorConfig: quotas, time scale, modelled durations, faults, auth,
                    and `assume` (the chosen readings of the assumption switches)
    assumptions.py  the switches: every behaviour the docs leave open, its readings,
                    default and evidence (`batchcopy emulator assumptions` lists them)
    errors.py       modelled service errors (code, HTTP status, message)
    clock.py        the emulated wall clock: time.time() + an offset tests move
    state.py        stored values: data stores, image sets, versions
    pending.py      accepted asynchronous work (copies, updates, deletions) in time order
    core.py         the model's state and the rules every operation shares
    copying.py      CopyImageSet
    updating.py     UpdateImageSetMetadata (metadata_updates.py: the DICOM edits)
    model.py        HealthImaging: the public API, data stores, reads, search, deletion
    dicom.py        image-set content, copies of it, search matching
    seed.py         synthetic DICOM hierarchies with deterministic ids
    quotas.py       per-operation token buckets (server side, monotonic clock)
    faults.py       injected throttles, 5xx, resets, latency, lost responses
    auth.py         optional SigV4 verification (real time), deny lists
    wire.py         restJson1 routing and (de)serialisation built from botocore's model
    shapes.py       request values read and checked against botocore's shapes
    server.py       aiohttp app (the API's request pipeline), start/stop helpers
    control.py      control routes under /_emulator (reset, seed, stats, faults, config,
                    assumptions, clock)
    cli.py          `batchcopy emulator serve | seed | stats | assumptions`
    ASSUMPTIONS.md  every reading the emulator makes where the docs are silent, as tables,
                    with the tests of each

The product never imports this package (only `batchcopy demo`, the CLI's `emulator`
group and the tests do); this package imports one module of the product,
`batchcopy.core.limits` (numbers only: the published limits and quotas), so that the
runner and the emulator read the same figures.
"""
