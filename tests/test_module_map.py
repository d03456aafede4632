"""The README's module map is the real tree (dev/module_map.py draws it)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_module_map_is_the_tree():
    res = subprocess.run([sys.executable, str(ROOT / "dev" / "module_map.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
