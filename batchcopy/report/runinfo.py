"""What a run was made with, for its summary JSON and its report's metadata: the options
it ran with and the versions of the packages that ran it. Standard library only.
"""

from __future__ import annotations

import dataclasses
import platform
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PACKAGES = ("batchcopy", "boto3", "botocore", "aioboto3", "aiobotocore", "pyarrow", "pandas")


def package_versions() -> dict[str, str | None]:
    """{"batchcopy": "0.1.0", "boto3": ..., "python": "3.11.7"} (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def _no_userinfo(url: str | None) -> str | None:
    """An endpoint URL without any user:password@ part (never written anywhere)."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def run_options(opts: Any) -> dict[str, Any]:
    """The options of one `run` (job.JobOptions, its RunSettings included) as plain data.

    Nothing secret is in them (credentials come from the AWS credential chain, never
    from options); a user:password in the endpoint URL is dropped all the same."""
    options = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
               if f.name != "settings"}
    options["endpoint_url"] = _no_userinfo(options.get("endpoint_url"))
    options["notify"] = [str(t) for t in options.get("notify") or ()]  # a webhook's host only
    options["rates"] = {op: {"rate": r, "burst": b}
                        for op, (r, b) in (options.get("rates") or {}).items()}
    settings = getattr(opts, "settings", None)
    if settings is not None and dataclasses.is_dataclass(settings):
        options["settings"] = dataclasses.asdict(settings)
    return options
