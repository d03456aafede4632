"""ASSUMPTIONS.md stays true to the registry and to the tests it names."""

from __future__ import annotations

import re
from pathlib import Path

from batchcopy.emulator.assumptions import SWITCHES

DOC = Path(__file__).resolve().parents[2] / "batchcopy" / "emulator" / "ASSUMPTIONS.md"
HERE = Path(__file__).resolve().parent
TEST_REF = re.compile(r"((?:tests/)?test_[a-z0-9_]+\.py)(?:::(test_[a-z0-9_]+)(?:\[([^\]]+)\])?)?")


def switch_rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\| [^|]*\(`([a-z_]+)`\) \|", line)
        if found:
            rows[found.group(1)] = line
    return rows


def test_every_switch_and_reading_has_a_row_with_its_default_and_tests() -> None:
    rows = switch_rows()
    assert set(rows) == {s.name for s in SWITCHES}
    for switch in SWITCHES:
        cells = [c.strip() for c in rows[switch.name].strip("|").split("|")]
        _, _, readings, default, tests = cells
        assert default == f"`{switch.default}`", switch.name
        for value in switch.values:
            assert f"`{value}`" in readings, (switch.name, value)
            assert re.search(rf"`{re.escape(value)}`: test_", tests), (switch.name, value)


def test_every_test_named_exists() -> None:
    refs = TEST_REF.findall(DOC.read_text(encoding="utf-8"))
    assert len(refs) > 50
    for file_name, function, param in refs:
        # a bare name is in tests/emulator; tests/... is relative to the project
        path = HERE.parents[1] / file_name if file_name.startswith("tests/") else HERE / file_name
        source = path.read_text(encoding="utf-8")
        if function:
            assert f"def {function}(" in source, f"{file_name}::{function}"
        if param:
            assert f'"{param}"' in source or f"id=\"{param}\"" in source, f"{file_name}::{function}[{param}]"
