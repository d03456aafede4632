"""The read-only checks `batchcopy doctor` adds to the pre-run ones: who the credentials
are (STS GetCallerIdentity), what the role may do (the IAM policy simulator where it is
allowed, else one cheap read per operation), and the account's applied request quotas
(Service Quotas, where readable), each a `Check` with its next step.

Every call here reads; none is retried more than botocore's two attempts. A check that
cannot be made says "not readable" (`ok` None): a doctor without iam:SimulatePrincipalPolicy
or servicequotas:ListServiceQuotas still passes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# what a run sends (and undo): the permissions the doctor asks about
RUN_ACTIONS = ("CopyImageSet", "GetImageSet", "GetImageSetMetadata", "ListImageSetVersions",
               "SearchImageSets")
QUOTA_SERVICE = "medical-imaging"


@dataclass
class Check:
    name: str
    ok: bool | None  # True passed, False failed, None not checked / not readable
    detail: str
    next_step: str = ""

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "–"}[self.ok]


def _client(service: str, profile: str | None, region: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile)
    return session.client(service, region_name=region, config=Config(
        retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=5,
        read_timeout=15))


def _why(exc: BaseException) -> str:
    from batchcopy.aws.retry import error_code, error_message

    message = error_message(exc)
    if message.lstrip().startswith("<"):
        message = "an HTML page, not an AWS answer"
    return f"{error_code(exc)}: {message}"[:200]


def identity(profile: str | None, region: str) -> tuple[Check, dict[str, str]]:
    """STS GetCallerIdentity: the account and the principal's ARN."""
    try:
        got = _client("sts", profile, region).get_caller_identity()
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not fail
        return (Check("identity", False, f"STS GetCallerIdentity: {_why(exc)}",
                      "check the credentials and that STS is reachable (AWS_ENDPOINT_URL_STS, "
                      "a proxy)"), {})
    who = {"account": str(got.get("Account")), "arn": str(got.get("Arn"))}
    return Check("identity", True, f"account {who['account']}, {who['arn']}"), who


def principal_arn(arn: str) -> str:
    """The IAM ARN the simulator wants: an assumed role's session ARN names its role."""
    found = re.match(r"arn:([^:]+):sts::(\d+):assumed-role/([^/]+)/", arn)
    if found:
        return f"arn:{found.group(1)}:iam::{found.group(2)}:role/{found.group(3)}"
    return arn


def simulated(profile: str | None, region: str, who: dict[str, str], datastore: str | None,
              actions: tuple[str, ...] = RUN_ACTIONS) -> dict[str, str] | None:
    """{action: the simulator's decision} for the principal on the data store's image sets,
    or None when the simulator cannot be used (refused, unavailable, no identity)."""
    if not who.get("arn") or not datastore:
        return None
    partition = who["arn"].split(":")[1]
    resource = (f"arn:{partition}:medical-imaging:{region}:{who['account']}:datastore/"
                f"{datastore}/imageset/*")
    try:
        got = _client("iam", profile, region).simulate_principal_policy(
            PolicySourceArn=principal_arn(who["arn"]), ResourceArns=[resource],
            ActionNames=[f"medical-imaging:{a}" for a in actions])
    except Exception:  # noqa: BLE001 - not allowed, or no simulator: not readable
        return None
    return {str(r["EvalActionName"]).split(":", 1)[-1]: str(r["EvalDecision"])
            for r in got.get("EvaluationResults") or []}


def quotas(profile: str | None, region: str, configured: dict[str, float]) -> list[Check]:
    """The applied request-rate quotas of the operations a run paces, against the rates
    it is configured with: a quota below the configured rate fails (the run would be
    throttled and go at the quota's pace), with the --rate to pass."""
    try:
        client = _client("service-quotas", profile, region)
        pages = client.get_paginator("list_service_quotas").paginate(ServiceCode=QUOTA_SERVICE)
        found = [q for page in pages for q in page.get("Quotas") or []]
    except Exception as exc:  # noqa: BLE001 - not readable: said, not failed
        return [Check("quotas", None, f"not readable ({_why(exc)}); the published default "
                      f"is CopyImageSet 0.25/s", "ask your administrator for "
                      "servicequotas:ListServiceQuotas, or check the Service Quotas console")]
    out = []
    for operation, rate in configured.items():
        quota = next((q for q in found if _rate_quota_of(q, operation)), None)
        if quota is None:
            continue
        applied = float(quota["Value"])
        if applied + 1e-9 < rate:
            out.append(Check(f"quota {operation}", False,
                             f"applied {applied:g}/s, below the {rate:g}/s the run is "
                             "configured with: it would be throttled",
                             f"pass --rate {operation}={applied:g} (or ask for an increase)"))
        else:
            out.append(Check(f"quota {operation}", True, f"applied {applied:g}/s; the run "
                             f"paces at {rate:g}/s" + (
                                 f" (pass --rate {operation}={applied:g} to use it all)"
                                 if applied > rate + 1e-9 else "")))
    if not out:
        out.append(Check("quotas", None, "Service Quotas lists no request-rate quota of "
                         f"{', '.join(configured)}: the published defaults apply"))
    return out


def _rate_quota_of(quota: dict[str, Any], operation: str) -> bool:
    name = str(quota.get("QuotaName") or "")
    value = quota.get("Value")
    return (re.search(rf"\b{operation}\b", name, re.IGNORECASE) is not None
            and "rate" in name.lower()
            and isinstance(value, (int, float)) and math.isfinite(float(value)))
