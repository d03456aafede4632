"""Manifests in: sources (local, s3://), CSV and Parquet readers, row rules, the
cross-row checks, one streaming scan.

`scan_manifest(path, delimiter=..., extra_columns=...)` is the public entry.
"""

from batchcopy.manifest.scan import scan_manifest

__all__ = ["scan_manifest"]
