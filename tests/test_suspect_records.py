"""suspect_records: a small batch is searched with Python's re (no pyarrow.compute import
for a small manifest), a large one with pyarrow.compute: the same records either way."""

from __future__ import annotations

import pyarrow as pa

from batchcopy.manifest import source as manifest_source
from batchcopy.manifest.source import suspect_records


def test_small_and_large_batches_find_the_same_records() -> None:
    cells = ["ok", "tab\tis fine", "line\nbreak", "bell\x07", None, "cr\r", "\x1f", "é", ""]
    values = [cells[i % len(cells)] for i in range(3 * manifest_source.SMALL_BATCH)]
    other = ["x\x00" if i % 1000 == 0 else "y" for i in range(len(values))]
    columns = [pa.array(values, pa.string()), pa.array(other, pa.string())]
    large = suspect_records(columns)
    assert len(columns[0]) > manifest_source.SMALL_BATCH  # the pyarrow.compute path
    expected = sorted({i for i, v in enumerate(values) if v and any(
        ord(ch) < 32 and ch != "\t" for ch in v)} | set(range(0, len(values), 1000)))
    assert large == expected
    small = manifest_source._suspect_small(columns)
    assert small == large
    head = [c.slice(0, 100) for c in columns]  # under the threshold: the Python path
    assert suspect_records(head) == [i for i in large if i < 100]
