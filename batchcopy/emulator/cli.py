"""`batchcopy emulator ...`: run the local HealthImaging emulator, seed it, read its stats.

Mounted by batchcopy/cli.py as `app.add_typer(emulator_app, name="emulator")`.
Heavy imports (aiohttp, botocore) happen inside the commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    from batchcopy.emulator.config import EmulatorConfig, FaultSpec, RateQuota

emulator_app = typer.Typer(
    help="A local AWS HealthImaging emulator (for tests, demos and dry runs).",
    no_args_is_help=True,
)

DEFAULT_PORT = 8787
ENDPOINT_ENV = "AWS_ENDPOINT_URL_MEDICAL_IMAGING"


def parse_rate(text: str) -> tuple[str, "RateQuota"]:
    """'OP=RATE[/BURST]' -> (op, RateQuota). Burst defaults to the op's default or max(1, rate)."""
    from batchcopy.emulator.config import DEFAULT_RATES, RateQuota

    op, sep, value = text.partition("=")
    if not sep or not op.strip():
        raise typer.BadParameter(f"expected OP=RATE[/BURST], got {text!r}")
    rate_s, _, burst_s = value.partition("/")
    try:
        rate = float(rate_s)
        default = DEFAULT_RATES.get(op.strip())
        burst = float(burst_s) if burst_s else (default.burst if default else max(1.0, rate))
    except ValueError:
        raise typer.BadParameter(f"expected OP=RATE[/BURST] with numbers, got {text!r}") from None
    if rate <= 0 or burst < 1:
        raise typer.BadParameter(f"rate must be > 0 and burst >= 1 in {text!r}")
    return op.strip(), RateQuota(rate, burst)


def parse_fault(text: str) -> "FaultSpec":
    """'KIND[:OP[:PROB]][,key=value...]' -> FaultSpec; keys: count, after, latency_s.

    e.g. 'throttle:CopyImageSet:0.2', 'reset:CopyImageSet,count=1',
    'latency:*:1,latency_s=0.5'.
    """
    from batchcopy.emulator.config import FAULT_KINDS, FaultSpec

    head, *extras = text.split(",")
    parts = head.split(":")
    kind = parts[0].strip()
    if kind not in FAULT_KINDS:
        raise typer.BadParameter(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    kwargs: dict[str, Any] = {"kind": kind}
    try:
        if len(parts) > 1 and parts[1].strip():
            kwargs["operation"] = parts[1].strip()
        if len(parts) > 2 and parts[2].strip():
            kwargs["probability"] = float(parts[2])
        for extra in extras:
            key, sep, value = extra.partition("=")
            key = key.strip()
            if not sep or key not in ("count", "after", "latency_s"):
                raise typer.BadParameter(f"unknown fault option {extra!r} (count, after, latency_s)")
            kwargs[key] = float(value) if key == "latency_s" else int(value)
    except ValueError:
        raise typer.BadParameter(f"bad number in fault {text!r}") from None
    return FaultSpec(**kwargs)


def parse_assume(text: str) -> tuple[str, str]:
    """'NAME=VALUE' -> (name, value), checked against the assumption registry."""
    from batchcopy.emulator.assumptions import parse_assignment

    try:
        return parse_assignment(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def build_config(
    config_file: str | None,
    time_scale: float | None,
    rates: list[str],
    no_rate_limits: bool,
    faults: list[str],
    fault_seed: int | None,
    auth_keys: list[str],
    assume: Sequence[str] = (),
) -> "EmulatorConfig":
    from batchcopy.emulator.config import AuthConfig, EmulatorConfig

    config = EmulatorConfig.from_json_file(config_file) if config_file else EmulatorConfig()
    for text in assume:
        name, value = parse_assume(text)
        config.assume[name] = value
    if time_scale is not None:
        if time_scale <= 0:
            raise typer.BadParameter("--time-scale must be > 0")
        config.time_scale = time_scale
    for text in rates:
        op, quota = parse_rate(text)
        config.rates[op] = quota
    if no_rate_limits:
        config.enforce_rates = False
    config.faults.extend(parse_fault(t) for t in faults)
    if fault_seed is not None:
        config.fault_seed = fault_seed
    if auth_keys:
        auth = config.auth or AuthConfig()
        for text in auth_keys:
            key, sep, secret = text.partition(":")
            if not sep or not key or not secret:
                raise typer.BadParameter("--auth-key takes ACCESS_KEY:SECRET")
            auth.keys[key] = secret
        config.auth = auth
    return config


def _seed_fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _print_env(endpoint: str, region: str, auth: bool) -> None:
    typer.echo(f"HealthImaging emulator listening on {endpoint}")
    typer.echo("Point clients at it with:")
    typer.echo(f"  export {ENDPOINT_ENV}={endpoint}")
    typer.echo("  export AWS_DISABLE_HOST_PREFIX_INJECTION=true")
    typer.echo(f"  export AWS_DEFAULT_REGION={region}")
    if auth:
        typer.echo("  # SigV4 is verified: use one of the access keys given with --auth-key / the config file")
    else:
        typer.echo("  # any dummy credentials work, e.g. AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
    typer.echo("Control routes: GET /_emulator/stats, /_emulator/assumptions; POST /_emulator/seed, /_emulator/faults,"
               " /_emulator/config, /_emulator/clock, /_emulator/reset. Ctrl-C to stop.", err=True)


@emulator_app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (keep it loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = DEFAULT_PORT,
    config_file: Annotated[Optional[str], typer.Option("--config", help="JSON file of EmulatorConfig fields.")] = None,
    time_scale: Annotated[Optional[float], typer.Option(help="Multiply modelled durations, divide rates (0.01 = 100x).")] = None,
    rate: Annotated[Optional[list[str]], typer.Option(help="Request quota override OP=RATE or OP=RATE/BURST (time-unscaled); repeatable.")] = None,
    no_rate_limits: Annotated[bool, typer.Option("--no-rate-limits", help="Never throttle.")] = False,
    fault: Annotated[Optional[list[str]], typer.Option(help="Fault rule KIND:OP:PROB plus optional ,count=N ,after=N ,latency_s=S (e.g. reset:CopyImageSet:0.1); repeatable.")] = None,
    fault_seed: Annotated[Optional[int], typer.Option(help="Seed of the fault RNG.")] = None,
    auth_key: Annotated[Optional[list[str]], typer.Option(help="ACCESS_KEY:SECRET to require SigV4; repeatable.")] = None,
    assume: Annotated[Optional[list[str]], typer.Option(help="Pick a reading of an undocumented behaviour, NAME=VALUE (see `batchcopy emulator assumptions`); repeatable.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed synthetic data at start with this RNG seed.")] = None,
    seed_datastores: Annotated[Optional[int], typer.Option(help="Data stores to seed.")] = None,
    seed_patients: Annotated[Optional[int], typer.Option(help="Patients per data store to seed.")] = None,
    seed_studies: Annotated[Optional[int], typer.Option(help="Studies per patient.")] = None,
    seed_series: Annotated[Optional[int], typer.Option(help="Series per study.")] = None,
    seed_instances: Annotated[Optional[int], typer.Option(help="Instances per series.")] = None,
    seed_frames: Annotated[Optional[int], typer.Option(help="Frames per instance.")] = None,
) -> None:
    """Run the emulator in the foreground until Ctrl-C."""
    import asyncio

    from batchcopy.emulator.server import serve_forever

    config = build_config(config_file, time_scale, rate or [], no_rate_limits, fault or [], fault_seed,
                          auth_key or [], assume or [])
    seed_values = _seed_fields(seed=seed, datastores=seed_datastores, patients=seed_patients,
                               studies_per_patient=seed_studies, series_per_study=seed_series,
                               instances_per_series=seed_instances, frames_per_instance=seed_frames)

    def on_ready(endpoint: str, service: Any) -> None:
        if seed_values:
            from batchcopy.emulator.seed import SeedSpec
            from batchcopy.emulator.seed import seed as run_seed

            summary = run_seed(service.model, SeedSpec(**seed_values))
            for ds in summary.get("datastores", []):
                typer.echo(f"seeded data store {ds['datastoreId']}: {len(ds.get('imageSets', []))} image sets")
        _print_env(endpoint, config.region, config.auth is not None)

    try:
        asyncio.run(serve_forever(config, host, port, on_ready=on_ready))
    except KeyboardInterrupt:
        typer.echo("emulator stopped", err=True)
    except OSError as exc:  # the port is taken, the address is not ours, no permission
        reason = exc.strerror or str(exc)
        typer.echo(f"batchcopy emulator: cannot listen on {host}:{port}: {reason}; "
                   "pick another --port (0 = any free port) or stop what is using it", err=True)
        raise typer.Exit(2) from None


def _endpoint(endpoint_url: str | None) -> str:
    url = endpoint_url or os.environ.get(ENDPOINT_ENV)
    if not url:
        raise typer.BadParameter(f"give --endpoint-url or set {ENDPOINT_ENV}")
    return url.rstrip("/")


def _control(endpoint: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(endpoint + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        typer.echo(f"emulator answered {exc.code}: {detail}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as exc:
        typer.echo(f"cannot reach the emulator at {endpoint}: {exc.reason}", err=True)
        raise typer.Exit(1) from None


@emulator_app.command("seed")
def seed_command(
    endpoint_url: Annotated[Optional[str], typer.Option(help=f"Emulator URL (default ${ENDPOINT_ENV}).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="RNG seed (same seed -> same ids).")] = None,
    datastores: Annotated[Optional[int], typer.Option(help="Data stores to create.")] = None,
    patients: Annotated[Optional[int], typer.Option(help="Patients per data store.")] = None,
    studies: Annotated[Optional[int], typer.Option(help="Studies per patient.")] = None,
    series: Annotated[Optional[int], typer.Option(help="Series per study.")] = None,
    instances: Annotated[Optional[int], typer.Option(help="Instances per series.")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per instance.")] = None,
    datastore_id: Annotated[Optional[str], typer.Option(help="Add to this existing data store.")] = None,
    datastore_name: Annotated[Optional[str], typer.Option(help="Name of the created data store(s).")] = None,
) -> None:
    """Seed synthetic image sets into a running emulator; print the summary JSON."""
    body = _seed_fields(seed=seed, datastores=datastores, patients=patients, studies_per_patient=studies,
                        series_per_study=series, instances_per_series=instances, frames_per_instance=frames,
                        datastore_id=datastore_id, datastore_name=datastore_name)
    summary = _control(_endpoint(endpoint_url), "POST", "/_emulator/seed", body)
    typer.echo(json.dumps(summary, indent=2))


@emulator_app.command()
def stats(
    endpoint_url: Annotated[Optional[str], typer.Option(help=f"Emulator URL (default ${ENDPOINT_ENV}).")] = None,
) -> None:
    """Print a running emulator's counters (calls, throttles, faults, copies)."""
    typer.echo(json.dumps(_control(_endpoint(endpoint_url), "GET", "/_emulator/stats"), indent=2))


@emulator_app.command("assumptions")
def assumptions_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    endpoint_url: Annotated[Optional[str], typer.Option(help="Show the current values of this running emulator.")] = None,
) -> None:
    """List every behaviour the documentation leaves open: its readings, default and evidence."""
    from batchcopy.emulator.assumptions import describe

    rows = (_control(_endpoint(endpoint_url), "GET", "/_emulator/assumptions")["assumptions"]
            if endpoint_url else describe({}))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['name']} = {row['value']}    (default {row['default']})")
        typer.echo(f"  {row['behaviour']}")
        width = max(len(value) for value in row["readings"])
        for value, meaning in row["readings"].items():
            mark = "*" if value == row["value"] else " "
            typer.echo(f"  {mark} {value.ljust(width)}  {meaning}")
        typer.echo(f"  evidence: {row['evidence']}")
        typer.echo("")
    typer.echo("Select with: serve --assume NAME=VALUE, \"assume\" in the --config JSON, or "
               "POST /_emulator/config {\"assume\": {NAME: VALUE}}.")
