"""The runner's API (ImagingApi's calls) served in-process by the emulator's own service
model: the real service rules (versions, locks, the asynchronous copy, conflicts), no
HTTP, on a clock the test moves. The runner's logic then runs in milliseconds.

Service errors come back as botocore ClientErrors, exactly what ImagingApi would raise;
`faults` are hooks that see each call first and may refuse it, or let it execute and then
lose the answer (botocore's ConnectionClosedError), as a dropped connection would.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from botocore.exceptions import ClientError, ConnectionClosedError

from batchcopy.emulator.config import EmulatorConfig
from batchcopy.emulator.errors import ServiceError
from batchcopy.emulator.model import HealthImaging
from batchcopy.emulator.seed import SeedSpec, seed
from batchcopy.aws.api import ImageSetProperties, ImagingApi
from batchcopy.aws.ratelimit import RateLimiter
from batchcopy.core.specs import CopyRequest

LOST = "lost"  # a fault hook's answer: execute the call, then drop the answer
Fault = Callable[[str, dict[str, Any]], Any]  # (operation, params) -> None | LOST | an exception


@dataclass
class Clock:
    """The model's clock: real time plus an offset the test moves."""

    offset: float = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


@dataclass
class ModelApi:
    model: HealthImaging
    clock: Clock
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(
        {op: (float("inf"), None) for op in ("CopyImageSet", "GetImageSet",
                                              "GetImageSetMetadata", "ListImageSetVersions",
                                              "SearchImageSets")}))
    faults: list[Fault] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    # ---- the runner's calls -------------------------------------------------------
    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Any other operation (ImagingApi.call), e.g. GetDatastore."""
        return self._call(operation, params)

    async def copy_image_set(self, request: CopyRequest, *, paced: bool = True) -> dict[str, Any]:
        return self._call("CopyImageSet", request.params())

    async def get_image_set(self, datastore_id: str, image_set_id: str,
                            version: str | None = None) -> ImageSetProperties:
        params = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version is not None:
            params["versionId"] = version
        return cast(ImageSetProperties, self._call("GetImageSet", params))

    async def poll_image_set(self, datastore_id: str, image_set_id: str,
                             version: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.get_image_set(datastore_id, image_set_id, version))

    async def latest_version(self, datastore_id: str, image_set_id: str) -> tuple[str, str, str]:
        found = await self.get_image_set(datastore_id, image_set_id)
        return (str(found["versionId"]), str(found.get("imageSetState", "")),
                str(found.get("imageSetWorkflowStatus", "")))

    async def list_image_set_versions(self, datastore_id: str,
                                      image_set_id: str) -> list[dict[str, Any]]:
        return self._all_pages("ListImageSetVersions", "imageSetPropertiesList",
                               {"datastoreId": datastore_id, "imageSetId": image_set_id})

    def _all_pages(self, operation: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a paginated operation, following nextToken."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._call(operation, {**params, **({"nextToken": token} if token else {})})
            items.extend(page[key])
            token = page.get("nextToken")
            if not token:
                return items

    async def search_image_sets(self, datastore_id: str,
                                search_criteria: dict[str, Any]) -> list[dict[str, Any]]:
        plain = json.loads(json.dumps(search_criteria, default=_epoch))
        return self._all_pages("SearchImageSets", "imageSetsMetadataSummaries",
                               {"datastoreId": datastore_id, "searchCriteria": plain})

    async def get_image_set_metadata(self, datastore_id: str, image_set_id: str,
                                     version: str | None = None) -> dict[str, Any]:
        params = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version is not None:
            params["versionId"] = version
        blob = self._call("GetImageSetMetadata", params)["imageSetMetadataBlob"]
        document: dict[str, Any] = json.loads(gzip.decompress(blob))
        return document

    # ---- plumbing ------------------------------------------------------------------
    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls[operation] += 1
        lose = False
        for fault in self.faults:
            verdict = fault(operation, params)
            if verdict == LOST:
                lose = True
            elif isinstance(verdict, BaseException):
                raise verdict
        try:
            result: dict[str, Any] = self.model.call(operation, params)
        except ServiceError as exc:
            raise ClientError({"Error": {"Code": exc.code, "Message": exc.message},
                               "ResponseMetadata": {"HTTPStatusCode": exc.status}},
                              operation) from None
        if lose:
            raise ConnectionClosedError(endpoint_url="http://model/")
        return result


def _epoch(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(type(value).__name__)


def service_error(code: str, status: int, message: str = "refused") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "CopyImageSet")


def once(op: str, answer: Any, *, when: Callable[[dict[str, Any]], bool] = lambda p: True) -> Fault:
    """A fault that answers `answer` to the first matching call of `op`, then never again."""
    fired = {"n": 0}

    def fault(operation: str, params: dict[str, Any]) -> Any:
        if operation == op and not fired["n"] and when(params):
            fired["n"] += 1
            return answer
        return None
    return fault


def world(*, seed_spec: dict[str, Any] | None = None, age_s: float = 0.0,
          **config: Any) -> tuple[ModelApi, dict[str, Any]]:
    """A model with seeded data created `age_s` seconds before now, and its API."""
    clock = Clock(offset=-age_s)
    fields = {"enforce_rates": False, "time_scale": 0.001, **config}
    model = HealthImaging(EmulatorConfig.from_dict(fields), clock=clock)
    spec = {"seed": 3, "patients": 4, "studies_per_patient": 1, "series_per_study": 2,
            "instances_per_series": 3, **(seed_spec or {})}
    summary = seed(model, SeedSpec(**spec))
    clock.offset = 0.0
    return ModelApi(model, clock), summary["datastores"][0]


def imaging_api(api: ModelApi) -> ImagingApi:
    """ModelApi as the runner sees it: mypy (.ci/run checks this file) proves it implements
    the ImagingApi protocol, signatures included."""
    return api
