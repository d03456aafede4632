"""The service's published limits, written once: what one CopyImageSet may carry, how many
copies (updates, deletions) a data store runs at once, and the default request quotas per
operation. The runner paces, merges and cuts calls by them; the emulator enforces them by
default. This is the only module of the product the emulator imports (it holds nothing
but numbers), so both sides read the same figures.

Sources: the HealthImaging quota page and botocore's service model (shape
CopiableAttributes: a string of 1 to 260,000 characters), as collected in
/work/shared/reference/healthimaging-notes.md. All are adjustable by AWS Support: the
runner's options (--rate, --max-in-flight...) override them, never this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

FRAMES_PER_COPY = 1000  # image frames one CopyImageSet request may carry
COPIABLE_ATTRIBUTES_CHARS = 260_000  # longest copiableAttributes string the API takes
CONCURRENT_COPIES_PER_DATASTORE = 100  # CopyImageSet requests running at once per data store
CONCURRENT_UPDATES_PER_DATASTORE = 100  # UpdateImageSetMetadata likewise
CONCURRENT_DELETES_PER_DATASTORE = 100  # DeleteImageSet likewise

# Request quotas per account and region: operation -> (rate per second, burst).
REQUEST_QUOTAS: Mapping[str, tuple[float, float]] = MappingProxyType({
    "CopyImageSet": (0.25, 1),
    "UpdateImageSetMetadata": (0.25, 1),
    "DeleteImageSet": (0.25, 1),
    "GetImageSet": (25, 50),
    "SearchImageSets": (25, 50),
    "ListImageSetVersions": (25, 50),
    "GetDICOMImportJob": (25, 50),
    "GetImageSetMetadata": (50, 100),
    "GetImageFrame": (1000, 2000),
    "GetDatastore": (10, 20),
    "ListDatastores": (5, 10),
    "CreateDatastore": (0.085, 1),
    "DeleteDatastore": (0.085, 1),
})
COPY_RATE = REQUEST_QUOTAS["CopyImageSet"][0]  # copies a second at the default quota
