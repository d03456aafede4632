"""Where the calls go: the endpoint and host prefix exactly as botocore resolves them, and
the set-ups that cannot work, said before anything is sent.

One rule, botocore's (botocore/args.py, client.py `_convert_to_request_dict`): the
endpoint is `--endpoint-url`, else the configured one (`AWS_ENDPOINT_URL_MEDICAL_IMAGING`,
`AWS_ENDPOINT_URL`, the profile's `services` section or `endpoint_url`; none of them with
`AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`), else the regional AWS endpoint. Whatever route
named it, image-set operations get the model's `runtime-` host prefix unless host prefix
injection is disabled (`AWS_DISABLE_HOST_PREFIX_INJECTION=true`, or
`disable_host_prefix_injection = true` in the profile). batchcopy adds no rule of its own:
the same settings send `aws medical-imaging ...` to the same hosts.

So the three common set-ups:

* **default**: nothing configured: control plane `medical-imaging.REGION.amazonaws.com`,
  image sets `runtime-medical-imaging.REGION.amazonaws.com` (a VPC endpoint with private
  DNS serves these very names);
* **a VPC endpoint by its own DNS name** (`vpce-...runtime-medical-imaging.REGION.vpce.
  amazonaws.com`): the endpoint URL by any route, and host prefix injection disabled;
* **the emulator** (or any endpoint on loopback): the same, e.g. what
  `batchcopy emulator serve` prints.

`check()` refuses, in one line with the setting to change, the endpoints the prefix would
break: an IP address or `localhost`, a VPC endpoint name, or a runtime host named as the
endpoint (`runtime-runtime-...`).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SERVICE = "medical-imaging"
ENV_VARS = ("AWS_ENDPOINT_URL_MEDICAL_IMAGING", "AWS_ENDPOINT_URL")
DISABLE = ("set AWS_DISABLE_HOST_PREFIX_INJECTION=true, or disable_host_prefix_injection = "
           "true in the profile (botocore's and the AWS CLI's own setting)")


class EndpointError(ValueError):
    """An endpoint set-up that cannot work: one line, the setting to change."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # botocore's endpoint URL (the control plane's host)
    source: str  # where it came from, in the words a user set it
    prefix: str  # the host prefix image-set operations get ("" when injection is off)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def runtime_url(self) -> str:
        """Where GetImageSet and CopyImageSet go."""
        parts = urlsplit(self.url)
        return parts._replace(netloc=self.prefix + parts.netloc).geturl()

    @property
    def kind(self) -> str:
        """default | vpc-endpoint | loopback | custom (for doctor and the logs)."""
        if self.source == "default":
            return "default"
        if self.host.endswith(".vpce.amazonaws.com"):
            return "vpc-endpoint"
        if _loopback(self.host):
            return "loopback"
        return "custom"


def source_of(endpoint_url: str | None, profile: str | None) -> str:
    """Which setting names the endpoint, by botocore's precedence (for messages)."""
    if endpoint_url:
        return "--endpoint-url"
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return "default"
    for name in ENV_VARS:
        if os.environ.get(name, "").strip():
            return name
    return "the profile's endpoint_url" if profile or os.environ.get("AWS_PROFILE") else \
        "the AWS config file's endpoint_url"


def resolve(*, profile: str | None, region: str, endpoint_url: str | None,
            session: Any = None) -> Endpoint:
    """The endpoint and host prefix botocore gives a medical-imaging client with these
    settings (a botocore client is made and looked at; nothing is sent). EndpointError for
    an endpoint botocore refuses."""
    import botocore.session

    session = session or botocore.session.Session(profile=profile)
    try:
        client = session.create_client(SERVICE, region_name=region, endpoint_url=endpoint_url,
                                       aws_access_key_id="x", aws_secret_access_key="x")
    except ValueError:  # botocore: "Invalid endpoint: ..."
        where = source_of(endpoint_url, profile)
        value = endpoint_url or os.environ.get(where) or str(exc_value(session))
        raise EndpointError(f"the endpoint {value!r} (from {where}) is not a URL like "
                            "https://host[:port]") from None
    url = str(client.meta.endpoint_url)
    model = client.meta.service_model.operation_model("GetImageSet")
    prefix = (model.endpoint or {}).get("hostPrefix") or ""
    configured = url != _default_url(session, region)
    return Endpoint(url, source_of(endpoint_url, profile) if configured else "default",
                    prefix if client.meta.config.inject_host_prefix else "")


def exc_value(session: Any) -> str:
    """The profile's endpoint_url, as written (for a message)."""
    try:
        return str(session.get_scoped_config().get("endpoint_url") or "?")
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def _default_url(session: Any, region: str) -> str:
    """What botocore resolves with no endpoint configured (FIPS and dual-stack included)."""
    from botocore.config import Config

    client = session.create_client(SERVICE, region_name=region, aws_access_key_id="x",
                                   aws_secret_access_key="x",
                                   config=Config(ignore_configured_endpoint_urls=True))
    return str(client.meta.endpoint_url)


def check(endpoint: Endpoint) -> None:
    """EndpointError for the endpoints a host prefix cannot work with."""
    if not endpoint.prefix:
        return
    host, where = endpoint.host, endpoint.source
    if _loopback(host) or _is_ip(host):
        raise EndpointError(
            f"the endpoint {endpoint.url} (from {where}) would get the {endpoint.prefix} host "
            f"prefix botocore adds to image-set calls, and {endpoint.prefix}{host} is no host: "
            f"{DISABLE}")
    if host.endswith(".vpce.amazonaws.com"):
        raise EndpointError(
            f"{endpoint.url} (from {where}) is a VPC endpoint's own name, and botocore adds the "
            f"{endpoint.prefix} host prefix to image-set calls ({endpoint.prefix}{host} does not "
            f"resolve): {DISABLE}, or leave the endpoint out and let private DNS send the "
            f"default names to the VPC endpoint")
    if host.startswith(endpoint.prefix) and host.endswith((".amazonaws.com", ".api.aws")):
        raise EndpointError(
            f"{endpoint.url} (from {where}) names the runtime host, and botocore adds "
            f"{endpoint.prefix} again ({endpoint.prefix}{host}): name "
            f"{host[len(endpoint.prefix):]} instead (image-set calls then go to {host}), or "
            f"{DISABLE}")


def _loopback(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost") or (
        _is_ip(host) and ipaddress.ip_address(host).is_loopback)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
