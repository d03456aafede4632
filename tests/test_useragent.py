"""The User-Agent header: built once per set of features, and still the one botocore builds."""

from __future__ import annotations

import asyncio
from typing import Any

from batchcopy.aws.client import ClientSettings, open_client


def test_requests_carry_botocore_user_agent_built_once(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    store = seeded["datastores"][0]
    ds, image_set = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    sent: list[str] = []

    async def main() -> tuple[str, int]:
        async with open_client(ClientSettings(endpoint_url=emulator.endpoint)) as client:
            creator = client._user_agent_creator
            builds = 0
            original = type(creator).to_string

            def counting(self: Any) -> str:
                nonlocal builds
                builds += 1
                return original(self)

            type(creator).to_string = counting  # the cached wrapper calls the class's builder
            try:
                client.meta.events.register(
                    "before-send.medical-imaging",
                    lambda request, **_: sent.append(request.headers["User-Agent"]))
                for _ in range(5):
                    await client.get_image_set(datastoreId=ds, imageSetId=image_set)
                expected = original(creator)
            finally:
                type(creator).to_string = original
            return expected, builds

    expected, builds = asyncio.run(main())
    assert len(sent) == 5
    assert {s.decode() if isinstance(s, bytes) else s for s in sent} == {expected}
    assert "Botocore/" in expected or "botocore/" in expected.lower()
    assert 1 <= builds <= 2  # not 10 (two per request): at most once per set of features
    assert emulator.stats()["calls"]["GetImageSet"] == 5
