"""When a run ends it says so (--notify: an SNS topic, read by a moto SQS subscriber; a
webhook on this machine), and its numbers are in a metrics file (--metrics-file,
Prometheus text format) during and after the run, read back with the Prometheus client's
own parser. A notification that cannot be sent is one warning; the exit code stays."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchcopy.cli import root
from batchcopy.console.metrics import render
from kit.resumekit import Running, distinct_copies, seed_world
from kit.runkit import FAST, run_manifest, write_manifest

SEED = {"seed": 9, "datastores": 1, "patients": 4, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 1, "frames_per_instance": 1}
HOUR = 360_000.0  # an emulated copy of 100 hours: surely in flight until the clock moves


def metrics(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{metric name: {labels (without the manifest): value}}, by the reference parser."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "manifest"))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def one(found: dict[str, Any], name: str) -> float:
    return found[name][()]


def test_the_sns_topic_hears_of_the_end_of_a_run(emulator: Any, client_env: dict[str, str],
                                                  tmp_path: Path, moto_endpoint: str) -> None:
    import boto3

    aws = {"region_name": "us-east-1", "endpoint_url": moto_endpoint,
           "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sqs, sns = boto3.client("sqs", **aws), boto3.client("sns", **aws)
    queue = sqs.create_queue(QueueName=f"ops-{tmp_path.name}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name=f"batchcopy-{tmp_path.name}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    w = seed_world(emulator, client_env, SEED)
    ran = run_manifest(write_manifest(tmp_path / "m.csv", distinct_copies(w, 3)),
                       {**w.env, "AWS_ENDPOINT_URL_SNS": moto_endpoint}, tmp_path,
                       "--notify", f"sns:{topic}")
    assert ran.code == 0, ran.stderr
    received = []
    for _ in range(20):  # bounded: moto delivers at once, a few long polls at most
        received = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
        if received:
            break
    assert len(received) == 1
    envelope = json.loads(received[0]["Body"])
    body = json.loads(envelope["Message"])
    assert envelope["Subject"].startswith("3 rows from") and len(envelope["Subject"]) <= 100
    assert body["event"] == "run_ended" and body["exit_code"] == 0 and body["outcome"] == "OK"
    assert body["summary"]["by_status"]["SUCCEEDED"] == body["summary"]["rows"] == 3
    assert body["text"].startswith("3 rows from") and body["text"].endswith("(exit 0, OK)")


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_hears_of_a_failed_run_and_a_dead_one_changes_nothing(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = HTTPServer(("127.0.0.1", 0), Hook)
    dead = f"http://127.0.0.1:{closed.server_address[1]}/hook"
    closed.server_close()  # a closed loopback port: nothing listens
    try:
        w = seed_world(emulator, client_env, SEED)
        rows = distinct_copies(w, 2)
        rows.append({**rows[0], "row_id": "absent", "source_image_set_id": "f" * 32})
        ran = run_manifest(write_manifest(tmp_path / "m.csv", rows), w.env, tmp_path,
                           "--notify", f"http://127.0.0.1:{server.server_address[1]}/secret-token",
                           "--notify", dead)
    finally:
        server.shutdown()
    assert ran.code == 1, ran.stderr  # the failed row's, not the dead webhook's
    assert len(Hook.received) == 1
    body = Hook.received[0]
    assert body["exit_code"] == 1 and body["outcome"] == "ROWS_FAILED"
    assert {s: n for s, n in body["summary"]["by_status"].items() if n} == {"SUCCEEDED": 2, "FAILED": 1}
    warnings = [line for line in ran.stderr.splitlines() if "could not send the notification" in line]
    assert len(warnings) == 1 and f"127.0.0.1:{closed.server_address[1]}/..." in warnings[0]
    assert "the run's exit code is unchanged" in warnings[0]
    assert "secret-token" not in ran.stderr and "secret-token" not in json.dumps(ran.summary())


@pytest.mark.emulator_config(copy_base_s=HOUR)
def test_the_metrics_file_during_and_after_a_run(emulator: Any, client_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    prom = tmp_path / "textfile" / "batchcopy.prom"
    prom.parent.mkdir()
    run = Running(["run", str(write_manifest(tmp_path / "m.csv", distinct_copies(w, 3))),
                   "--journal", str(tmp_path / "j.sqlite"), "--report", str(tmp_path / "r.parquet"),
                   *FAST, "--log-interval", "0.1", "--metrics-file", str(prom)], w.env, tmp_path, "run")

    def copies_in_flight() -> bool:
        found = metrics(prom) if prom.exists() else {}
        return bool(found) and one(found, "batchcopy_calls_in_flight") == 3

    assert run.wait_until(copies_in_flight), run.stderr()
    during = metrics(prom)
    assert one(during, "batchcopy_run_running") == 1 and "batchcopy_run_exit_code" not in during
    assert one(during, "batchcopy_rows_total") == 3 and one(during, "batchcopy_rows_done") == 0
    assert not list(prom.parent.glob(".*.tmp"))  # written beside and renamed
    w.emulator.update_config({"copy_base_s": 2.0})
    w.emulator.set_clock(advance_s=2 * HOUR)  # the copies end
    assert run.wait() == 0, run.stderr()
    after = metrics(prom)
    assert one(after, "batchcopy_run_running") == 0 and one(after, "batchcopy_run_exit_code") == 0
    assert one(after, "batchcopy_rows_done") == 3
    assert after["batchcopy_rows_finished"] == {(("status", "SUCCEEDED"),): 3}
    assert one(after, "batchcopy_copy_calls_accepted_total") == 3
    assert one(after, "batchcopy_calls_in_flight") == 0


def test_a_manifest_label_is_escaped() -> None:
    snap = {"rows_total": 1, "rows_done": 0, "by_status": {}, "in_flight": 0, "queued": 0,
            "throttles": 0, "copy_calls_accepted": 0, "quota_per_s": 0.25}
    text = render(snap, manifest='we"ird\\name\n.csv', run_id=1, started=0, exit_code=None, now=1)
    family = next(text_string_to_metric_families(text))
    assert family.samples[0].labels["manifest"] == 'we"ird\\name\n.csv'


@pytest.mark.parametrize("target,expected", [
    ("http://example.com/hook", "--notify: 'http://example.com/hook': a webhook over http:// only to this machine"),
    ("sns:arn:aws:sqs:us-east-1:123456789012:q", "is not an SNS topic: expected sns:arn:aws:sns:REGION:ACCOUNT:TOPIC"),
    ("mailto:ops@example.com", "expected sns:arn:aws:sns:REGION:ACCOUNT:TOPIC or a webhook URL"),
])
def test_a_bad_notify_target_is_one_line_and_exit_2(target: str, expected: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["batchcopy", "run", str(tmp_path / "m.csv"), "--notify", target])
    with pytest.raises(SystemExit) as done:
        root.main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
