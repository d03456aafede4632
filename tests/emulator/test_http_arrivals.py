"""Request quotas count arrivals, as the service's front end would: when a request's first
bytes reached the machine (the kernel's stamp), not when the emulator's busy event loop got
round to it. Two requests sent 0.3 s apart against a 4/s burst-1 quota, while the
emulator's loop is held up for 1.5 s: both arrive in time, and are counted so; stamped by
the handler they would be counted together and the second refused."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest

from batchcopy.emulator.config import RateQuota
from conftest import boto3_config

QUOTA = {"GetDatastore": RateQuota(0.04, 1)}  # 4/s burst 1 at the tests' time scale


def two_requests_while_the_emulator_is_busy(emulator: Any, client_env: dict[str, str],
                                            ds: str) -> dict[str, int]:
    clients = [boto3.session.Session().client(
        "medical-imaging", endpoint_url=emulator.endpoint, region_name="us-east-1",
        config=boto3_config()) for _ in range(2)]
    for client in clients:  # connections made (and kept) before the emulator is held up
        client.list_datastores()
    errors: list[BaseException] = []

    def get(client: Any, after_s: float) -> None:
        time.sleep(after_s)
        try:
            client.get_datastore(datastoreId=ds)
        except Exception as exc:  # noqa: BLE001 - counted below
            errors.append(exc)

    emulator._loop.call_soon_threadsafe(time.sleep, 1.5)  # the emulator's loop is busy
    threads = [threading.Thread(target=get, args=(c, 0.3 * i)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return {"throttled": int(emulator.stats()["throttled"].get("GetDatastore", 0)),
            "errors": len(errors)}


@pytest.mark.emulator_config(rates=QUOTA)
def test_quotas_count_when_requests_reached_the_machine(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    assert two_requests_while_the_emulator_is_busy(emulator, client_env, ds) == {
        "throttled": 0, "errors": 0}


@pytest.mark.emulator_config(rates=QUOTA, kernel_arrivals=False)
def test_stamped_by_the_handler_a_busy_emulator_refuses_requests_sent_in_time(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    assert two_requests_while_the_emulator_is_busy(emulator, client_env, ds) == {
        "throttled": 1, "errors": 1}
