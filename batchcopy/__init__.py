"""batchcopy: run AWS HealthImaging CopyImageSet operations in bulk.

Kept import-light on purpose: `batchcopy --help` must not import pandas,
pyarrow or aioboto3.
"""

__version__ = "0.1.0"
