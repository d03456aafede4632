"""Journals of earlier batchcopy versions: one file per manifest, named from the manifest's
identity (its URI and `--datastore-id`) in `<state dir>/journals/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """Which manifest a per-manifest journal of an earlier version belonged to."""

    manifest: str  # the manifest's URI: an absolute local path or s3://bucket/key
    datastore_id: str | None  # the --datastore-id default, part of what rows mean

    def to_json(self) -> str:
        return json.dumps({"manifest": self.manifest, "datastore_id": self.datastore_id},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Identity":
        d = json.loads(text)
        return cls(d["manifest"], d.get("datastore_id"))
