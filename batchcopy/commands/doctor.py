"""`batchcopy doctor [MANIFEST]`: what a careful operator checks before a bulk run, read-only,
as a table of ✓ / ✗ with the next step of each. Exit 0 when the run can go, 2 when a check
failed (a set-up to fix), like `run`'s own refusal.

    manifest     valid; its data stores and its first row
    AWS settings region, profile, credentials resolved and not expired    (aws/preflight.py)
    endpoint     the endpoint and runtime host botocore will use             (aws/endpoints.py)
    TLS          how the connection is verified (CA bundle, proxy), or plain HTTP on loopback
    identity     STS GetCallerIdentity: account and principal                  (aws/checks.py)
    data stores  GetDatastore of each: ACTIVE
    first row    GetImageSet of its source
    permissions  one cheap read per operation the run reads with; CopyImageSet by the IAM
                 policy simulator where that is allowed
    quotas       the applied request-rate quotas (Service Quotas, where readable) against
                 the configured --rate

Nothing is written and no CopyImageSet is sent: the doctor changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcopy.aws.checks import Check
from batchcopy.core.specs import ExitCode

if TYPE_CHECKING:
    from batchcopy.aws.api import ImagingApi
    from batchcopy.aws.endpoints import Endpoint

NOT_CHECKED = "not checked: an earlier check failed"


@dataclass
class DoctorOptions:
    manifest: str | None = None
    datastore_id: str | None = None
    delimiter: str | None = None
    extra_columns: str = "error"
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    rates: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    output: str = "text"


@dataclass
class Target:
    """What the checks read: the manifest's data stores and its first row."""

    rows: int = 0
    datastores: list[str] = field(default_factory=list)
    first: tuple[str, str, str | None] | None = None  # data store, source, pinned version


def run_doctor(opts: DoctorOptions) -> int:
    checks = asyncio.run(diagnose(opts))
    failed = [c for c in checks if c.ok is False]
    if opts.output == "json":
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(table(checks, opts))
    return ExitCode.USAGE if failed else ExitCode.OK


def table(checks: list[Check], opts: DoctorOptions) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"batchcopy doctor{': ' + opts.manifest if opts.manifest else ''}"]
    for c in checks:
        lines.append(f"  {c.mark} {c.name:<{width}}  {c.detail}")
        if c.next_step and c.ok is not True:
            lines.append(f"    {'':<{width}}  next: {c.next_step}")
    failed = sum(c.ok is False for c in checks)
    lines.append(f"{failed} check(s) failed: fix them, then run `batchcopy doctor` again"
                 if failed else "the run can go" + (
                     f": batchcopy run {opts.manifest} --limit 3 tries the first rows"
                     if opts.manifest else ""))
    return "\n".join(lines)


async def diagnose(opts: DoctorOptions) -> list[Check]:
    from batchcopy.aws import preflight
    from batchcopy.aws.preflight import SetupError

    checks: list[Check] = []
    target = _manifest(opts, checks)
    try:
        preflight.check_endpoint(opts.endpoint_url)
        region = preflight.check_aws(opts.profile, opts.region)
    except SetupError as exc:
        checks.append(Check("AWS settings", False, str(exc), "fix the setting it names"))
        return checks + [Check("the service", None, NOT_CHECKED)]
    checks.append(Check("AWS settings", True, _settings_text(opts.profile, region)))
    try:
        endpoint = preflight.resolve_endpoint(opts.profile, region, opts.endpoint_url)
    except SetupError as exc:
        checks.append(Check("endpoint", False, str(exc), "change the setting it names"))
        return checks + [Check("the service", None, NOT_CHECKED)]
    checks.append(Check("endpoint", True, f"image-set calls go to {endpoint.runtime_url} "
                        f"({endpoint.kind}; from {endpoint.source})"))
    checks.append(_tls(endpoint, opts.profile))
    from batchcopy.aws import checks as aws

    found, who = await asyncio.to_thread(aws.identity, opts.profile, region)
    checks.append(found)
    await _service(opts, region, endpoint, target, checks)
    ds = target.first[0] if target.first else (
        target.datastores[0] if target.datastores else None)
    decisions = await asyncio.to_thread(aws.simulated, opts.profile, region, who, ds)
    checks.append(_copy_permission(decisions))
    from batchcopy.aws.ratelimit import RateLimiter

    configured = RateLimiter(opts.rates).configured()
    rates = {op: configured[op][0] for op in ("CopyImageSet", "GetImageSet")}
    checks.extend(await asyncio.to_thread(aws.quotas, opts.profile, region, rates))
    return checks


def _manifest(opts: DoctorOptions, checks: list[Check]) -> Target:
    target = Target(datastores=[opts.datastore_id] if opts.datastore_id else [])
    if not opts.manifest:
        return target
    from batchcopy.manifest.scan import ManifestInvalid, scan_manifest

    stores: set[str] = set()
    try:
        with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
            local = _download(opts.manifest, Path(tmp))
            scan = scan_manifest(local, display_name=opts.manifest,
                                 default_datastore_id=opts.datastore_id,
                                 delimiter=opts.delimiter,
                                 extra_columns=opts.extra_columns)  # type: ignore[arg-type]
            for batch in scan:
                for spec in batch:
                    stores.add(spec.datastore_id)
                    if target.first is None:
                        target.first = (spec.datastore_id, spec.source_image_set_id,
                                        spec.source_version_id)
            report = scan.report
    except (ManifestInvalid, OSError, ValueError) as exc:
        checks.append(Check("manifest", False, f"{opts.manifest}: {exc}",
                            f"batchcopy validate {opts.manifest}"))
        return target
    if not report.ok:
        total = len(report.errors) + report.more_errors
        checks.append(Check("manifest", False, f"{total} error(s), e.g. {report.errors[0]}",
                            f"batchcopy validate {opts.manifest} lists them"))
        return target
    target.rows, target.datastores = report.rows, sorted(stores)
    checks.append(Check("manifest", True, f"{report.rows} row(s) valid, {len(stores)} data "
                        f"store(s)"))
    return target


def _download(manifest: str, tmp: Path) -> Path:
    from batchcopy.aws import storage

    async def get() -> Path:
        return await storage.download(manifest, tmp)

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # diagnose() owns the loop
        return pool.submit(asyncio.run, get()).result()


def _settings_text(profile: str | None, region: str) -> str:
    import botocore.session

    creds = botocore.session.Session(profile=profile).get_credentials()
    method = getattr(creds, "method", "?")
    expiry = getattr(creds, "_expiry_time", None)
    until = f", valid until {expiry:%Y-%m-%d %H:%M} UTC" if expiry is not None else ""
    return (f"region {region}, profile {profile or '(default chain)'}, credentials from "
            f"{method}{until}")


def _tls(endpoint: Endpoint, profile: str | None) -> Check:
    import botocore.session
    from botocore.utils import get_environ_proxies

    from batchcopy.aws.tls import describe

    url = endpoint.runtime_url
    if url.startswith("http://"):
        if endpoint.kind == "loopback":
            return Check("TLS", True, "plain HTTP on loopback (an emulator): nothing leaves "
                         "this machine")
        return Check("TLS", False, f"{url} is plain HTTP: image data would travel "
                     "unencrypted", "use an https:// endpoint")
    verify = botocore.session.Session(profile=profile).get_config_variable("ca_bundle") or True
    proxy = get_environ_proxies(url).get("https")
    return Check("TLS", True, describe(verify, proxy))


async def _service(opts: DoctorOptions, region: str, endpoint: Endpoint, target: Target,
                   checks: list[Check]) -> None:
    """The data stores, the first row's source, one read per operation the run reads with."""
    from batchcopy.aws import preflight
    from batchcopy.aws.client import ClientSettings, ImagingApi, open_client
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.aws.retry import Backoff

    settings = ClientSettings(endpoint_url=opts.endpoint_url, region=region,
                              profile=opts.profile, connect_timeout=5.0, read_timeout=30.0)
    async with open_client(settings) as client:
        api = ImagingApi(client, RateLimiter(opts.rates), max_attempts=preflight.PREFLIGHT_ATTEMPTS,
                         backoff=Backoff(0.2, 1.0))
        stores = await _datastores(api, endpoint, target.datastores)
        checks.append(stores)
        if stores.ok is False and "TLS" in stores.detail:
            _tls_failed(checks, stores.detail)
            return
        for check in await _reads(api, endpoint, target):
            checks.append(check)


def _tls_failed(checks: list[Check], detail: str) -> None:
    for c in checks:
        if c.name == "TLS":
            c.ok, c.detail, c.next_step = False, detail, "check the host name, AWS_CA_BUNDLE, the proxy"


async def _datastores(api: ImagingApi, endpoint: Endpoint, datastores: list[str]) -> Check:
    from batchcopy.aws.preflight import SetupError, check_service

    if not datastores:
        return Check("data stores", None, "none named (give MANIFEST or --datastore-id)")
    try:
        notes = await check_service(api, endpoint, datastores, None)
    except SetupError as exc:
        return Check("data stores", False, str(exc), "check --region, the profile (account) "
                     "and the endpoint")
    text = f"{len(datastores)} data store(s) ACTIVE" if not notes else "; ".join(notes)
    return Check("data stores", None if notes else True, text)


async def _reads(api: ImagingApi, endpoint: Endpoint, target: Target) -> list[Check]:
    """GetImageSet of the first row's source, then one read per operation; AccessDenied
    fails that operation's permission, any other answer shows it allowed."""
    from batchcopy.aws.retry import error_code, error_message

    out: list[Check] = []
    if target.first is None:
        if target.datastores:
            out.append(await _allowed(api, "SearchImageSets", datastoreId=target.datastores[0],
                                      searchCriteria={}, maxResults=1))
        return out
    ds, source, _ = target.first
    try:
        got = await api.get_image_set(ds, source)
    except Exception as exc:  # noqa: BLE001 - reported
        code = error_code(exc)
        denied = code in ("AccessDeniedException", "AccessDenied")
        out.append(Check("first row", False, f"GetImageSet of {source}: {code}: "
                         f"{error_message(exc)}", "grant medical-imaging:GetImageSet" if denied
                         else "check the manifest's first row (its data store and source)"))
        return out
    version = str(got["versionId"])
    out.append(Check("first row", True, f"source {source} version {version}, "
                     f"{got.get('imageSetState')} / {got.get('imageSetWorkflowStatus')}"))
    out.append(Check("permission GetImageSet", True, "allowed (the read above)"))
    out.append(await _allowed(api, "GetImageSetMetadata", datastoreId=ds, imageSetId=source,
                              versionId=version))
    out.append(await _allowed(api, "ListImageSetVersions", datastoreId=ds, imageSetId=source,
                              maxResults=1))
    out.append(await _allowed(api, "SearchImageSets", datastoreId=ds, searchCriteria={},
                              maxResults=1))
    return out


async def _allowed(api: ImagingApi, operation: str, **params: Any) -> Check:
    from batchcopy.aws.retry import error_code, error_message

    name = f"permission {operation}"
    try:
        got = await api.call(operation, **params)
        blob = got.get("imageSetMetadataBlob")
        if blob is not None:
            blob.close()
    except Exception as exc:  # noqa: BLE001 - reported
        code = error_code(exc)
        if code in ("AccessDeniedException", "AccessDenied"):
            return Check(name, False, f"{code}: {error_message(exc)}",
                         f"grant medical-imaging:{operation} (README, IAM)")
        return Check(name, True, f"allowed (it answered {code})")
    return Check(name, True, "allowed (one read)")


def _copy_permission(decisions: dict[str, str] | None) -> Check:
    name = "permission CopyImageSet"
    if decisions is None:
        return Check(name, None, "not checked: no read shows it, and the IAM policy simulator "
                     "is not readable", "run --limit 1 tries one copy")
    decision = decisions.get("CopyImageSet", "?")
    if decision == "allowed":
        return Check(name, True, "allowed (the IAM policy simulator)")
    return Check(name, False, f"the IAM policy simulator says {decision}",
                 "grant medical-imaging:CopyImageSet on the data store's image sets")
