"""Tell someone that a run ended (finished, aborted, stopped, out of time): `--notify
sns:TOPIC_ARN` publishes to an SNS topic, `--notify https://...` posts to a webhook.

The message is one JSON object: `text` (one line a person reads: a chat webhook such as
Slack's shows it as it is), `event` ("run_ended"), `exit_code`, `outcome` (the exit code's
name), and `summary` (the summary JSON beside the report). SNS gets it as the message, with
the same line as the subject (at most 100 characters). A webhook is `https://` (any host),
or `http://` to this machine only (127.0.0.1, ::1, localhost: a local relay), so a summary
never crosses a network in clear text.

A notification that cannot be sent never changes the run's exit code: it is one WARNING
line naming the target (a webhook by its host only: its URL is its secret) and the error. Credentials for SNS are the run's (--profile, the
default chain); the topic's region is the ARN's; `AWS_ENDPOINT_URL_SNS` is honoured.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

_ARN = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]+):(\d{12}):[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
TIMEOUT_S = 10.0
SUBJECT_MAX = 100


@dataclass(frozen=True)
class Target:
    kind: str  # "sns" | "webhook"
    address: str  # the topic ARN, or the URL

    def __str__(self) -> str:
        """As logs and summaries show it: a webhook's path and query left out (a chat
        webhook's URL is its secret)."""
        if self.kind == "sns":
            return f"sns:{self.address}"
        url = urlparse(self.address)
        hidden = "/..." if (url.path not in ("", "/") or url.query) else ""
        return f"{url.scheme}://{url.netloc.rpartition('@')[2]}{hidden}"


def parse_target(text: str) -> Target:
    """`sns:arn:aws:sns:REGION:ACCOUNT:TOPIC` or a webhook URL; ValueError saying what is
    expected."""
    if text.startswith("sns:"):
        arn = text[len("sns:"):]
        if not _ARN.match(arn):
            raise ValueError(f"{text!r} is not an SNS topic: expected "
                             "sns:arn:aws:sns:REGION:ACCOUNT:TOPIC")
        return Target("sns", arn)
    url = urlparse(text)
    if url.scheme == "https" and url.hostname:
        return Target("webhook", text)
    if url.scheme == "http" and (url.hostname or "") in _LOOPBACK:
        return Target("webhook", text)
    if url.scheme == "http":
        raise ValueError(f"{text!r}: a webhook over http:// only to this machine "
                         "(127.0.0.1, localhost); use https:// for another host")
    raise ValueError(f"{text!r}: expected sns:arn:aws:sns:REGION:ACCOUNT:TOPIC or a webhook "
                     "URL (https://...)")


def message(text: str, exit_code: int, outcome: str, summary: dict[str, Any]) -> dict[str, Any]:
    return {"text": text, "event": "run_ended", "exit_code": exit_code, "outcome": outcome,
            "summary": summary}


async def send_all(targets: list[Target], body: dict[str, Any], *,
                   profile: str | None = None) -> list[str]:
    """Send `body` to every target, at the same time; one line per target that failed."""
    async def one(target: Target) -> str | None:
        try:
            if target.kind == "sns":
                await _publish(target.address, body, profile)
            else:
                await asyncio.to_thread(_post, target.address, body)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised
            return f"--notify {target}: could not send the notification: {_reason(exc)}"
        return None

    failures = await asyncio.gather(*(one(t) for t in targets))
    return [f for f in failures if f]


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


async def _publish(arn: str, body: dict[str, Any], profile: str | None) -> None:
    import aioboto3
    from aiobotocore.config import AioConfig

    region = arn.split(":")[3]
    config = AioConfig(connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S,
                       retries={"max_attempts": 3, "mode": "standard"})
    subject = " ".join(body["text"].split())[:SUBJECT_MAX]
    async with aioboto3.Session(profile_name=profile).client("sns", region_name=region,
                                                              config=config) as sns:
        await sns.publish(TopicArn=arn, Subject=subject, Message=json.dumps(body, default=str))


def _post(url: str, body: dict[str, Any]) -> None:
    import urllib.request

    from batchcopy import __name__ as package
    from importlib.metadata import version

    data = json.dumps(body, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"{package}/{version(package)}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - checked scheme
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")
