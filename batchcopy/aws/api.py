"""The HealthImaging calls the stages make, as one Protocol: what the runner (versions,
prechecks, the send, reconciliation, refusals), the copy waiter, the presence check and
verify ask of the service. aws/client.ImagingApi implements it over botocore; the tests'
double (tests/kit/modelapi.py ModelApi) over the emulator's model, in process. The seams are
typed with it (mypy checks them), so a double that drifts from the client is caught.
`SearchingApi` and `SendingApi` add what only the real client has: SearchImageSets page by
page (select), one unretried attempt of an operation (undo).
GetImageSet answers are typed (`ImageSetProperties`): a misspelt answer[key] is a mypy error.

Every call is paced by `limiter` (the caller takes a token where it says so:
poll_image_set's, and a copy sent with paced=False) and retried as the client's own rules
say; CopyImageSet is never retried blindly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol, Required, TypedDict, runtime_checkable

from batchcopy.aws.ratelimit import RateLimiter
from batchcopy.core.specs import CopyRequest


class Overrides(TypedDict, total=False):
    forced: bool  # the version was made with force=true


class ImageSetProperties(TypedDict, total=False):
    """GetImageSet's answer (the service's API reference: the first four always there;
    botocore and aws/lightcalls.py give the timestamps as datetimes)."""

    datastoreId: Required[str]
    imageSetId: Required[str]
    versionId: Required[str]
    imageSetState: Required[str]  # ACTIVE | LOCKED | DELETED
    imageSetWorkflowStatus: str  # CREATED | COPIED | COPYING | COPY_FAILED | ...
    createdAt: datetime
    updatedAt: datetime
    deletedAt: datetime
    message: str  # why a copy or update failed
    imageSetArn: str
    overrides: Overrides
    isPrimary: bool
    ResponseMetadata: dict[str, Any]  # HTTP status, request id (botocore and the light calls)


@runtime_checkable
class ImagingApi(Protocol):
    limiter: RateLimiter

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Any operation by name (e.g. GetDatastore), paced and retried."""
        ...

    async def copy_image_set(self, request: CopyRequest, *,
                             paced: bool = True) -> dict[str, Any]:
        """One CopyImageSet request (paced=False: the caller holds its token)."""
        ...

    async def get_image_set(self, datastore_id: str, image_set_id: str,
                            version: str | None = None) -> ImageSetProperties:
        """GetImageSet of `version` (None: the latest), paced and retried."""
        ...

    async def poll_image_set(self, datastore_id: str, image_set_id: str,
                             version: str) -> dict[str, Any]:
        """One GetImageSet attempt whose token the caller has taken; never retried."""
        ...

    async def latest_version(self, datastore_id: str,
                             image_set_id: str) -> tuple[str, str, str]:
        """(versionId, imageSetState, imageSetWorkflowStatus) of the latest version."""
        ...

    async def list_image_set_versions(self, datastore_id: str,
                                      image_set_id: str) -> list[dict[str, Any]]:
        ...

    async def search_image_sets(self, datastore_id: str,
                                search_criteria: dict[str, Any]) -> list[dict[str, Any]]:
        ...

    async def get_image_set_metadata(self, datastore_id: str, image_set_id: str,
                                     version: str | None = None) -> dict[str, Any]:
        """The metadata document, gunzipped and decoded."""
        ...


class SearchingApi(ImagingApi, Protocol):
    """ImagingApi and SearchImageSets page by page, each page as it comes (query/selector.py
    reads the first ones while the search goes on); aws/client.ImagingApi implements it."""

    def search_pages(self, datastore_id: str, search_criteria: dict[str, Any],
                     page_size: int = ...) -> AsyncIterator[list[dict[str, Any]]]:
        """The summaries of each page; a repeated nextToken ends the search."""
        ...


class SendingApi(ImagingApi, Protocol):
    """ImagingApi and one attempt of any operation, never retried (undo/apply.py sends its
    UpdateImageSetMetadata and DeleteImageSet with it: a call without a usable answer is
    reconciled, not resent); aws/client.ImagingApi implements it."""

    async def send_once(self, operation: str, **params: Any) -> dict[str, Any]:
        ...
