"""The layout rules of issue 19 hold on the real tree (dev/layout_check.py checks them): at
most 6 modules directly in batchcopy/, no import cycle, no private name imported across
modules, no module over 450 lines, no bare ensure_future; and the emulator stays a separate
house (it imports batchcopy.core.limits of the product, nothing else; the product imports it
only for `batchcopy demo` and the CLI's `emulator` group)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]

# Allow-list of known breaches: empty since the ledger merge split journal.py and rewired
# commands/run.py. Nothing may join it without a reason written here.
ALLOWED: tuple[str, ...] = ()

EMULATOR_MAY_IMPORT = {"batchcopy.core.limits"}  # numbers only: the published limits
IMPORTS_THE_EMULATOR = {"batchcopy.commands.demo", "batchcopy.cli.root"}


def layout_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layout_check", ROOT / "dev" / "layout_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("layout_check", module)
    spec.loader.exec_module(module)
    return module


def test_no_layout_rule_is_broken_outside_the_allow_list() -> None:
    found = layout_check().breaches()
    broken = [line for line in found if not line.startswith(ALLOWED)]
    assert broken == [], "\n".join(broken)


def test_the_allow_list_names_only_what_still_breaks_a_rule() -> None:
    """An entry that breaks no rule any more must leave ALLOWED (the list cannot go stale)."""
    found = layout_check().breaches()
    for allowed in ALLOWED:
        assert any(line.startswith(allowed) for line in found), \
            f"{allowed} breaks no layout rule any more: take it off ALLOWED"


def test_the_emulator_is_a_separate_house() -> None:
    check = layout_check()
    mods = check.modules()
    into: list[str] = []
    out_of: list[str] = []
    for name, path in mods.items():
        for target, _, line in check.imports(path, mods):
            inside = name.startswith("batchcopy.emulator")
            if inside and not target.startswith("batchcopy.emulator") \
                    and target not in EMULATOR_MAY_IMPORT:
                out_of.append(f"{name}:{line} imports {target}")
            if not inside and target.startswith("batchcopy.emulator") \
                    and name not in IMPORTS_THE_EMULATOR:
                into.append(f"{name}:{line} imports {target}")
    assert out_of == [], "the emulator imports the product: " + "; ".join(out_of)
    assert into == [], "the product imports the emulator: " + "; ".join(into)
