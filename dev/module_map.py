"""Print the README's module map from the real tree: every package and module of
`batchcopy/` with the first line of its docstring. `python dev/module_map.py --check`
exits 1 when the README's map is not the tree's (tests/test_module_map.py runs it).
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "batchcopy"
START, END = "<!-- module map: dev/module_map.py -->", "<!-- end of module map -->"
WIDTH = 96


def first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    line = " ".join(doc.strip().split("\n\n")[0].split())
    end = re.search(r"(?<=[a-z)`])\.(\s|$)", line)  # the first sentence
    line = line[: end.start() + 1] if end else line
    if len(line) > 150:  # a long first sentence: its head, before the colon
        head = re.split(r"(?<=[a-z)`]):\s", line, maxsplit=1)[0]
        line = head + "." if len(head) < len(line) else line
    return line


def entries(directory: Path, depth: int = 1) -> list[str]:
    out: list[str] = []
    pad = "  " * depth
    files = sorted(p for p in directory.glob("*.py") if p.name != "__init__.py")
    for f in files:
        out.append(_fit(f"{pad}{f.name:<20} {first_line(f)}"))
    for sub in sorted(p for p in directory.iterdir() if (p / "__init__.py").exists()):
        out.append(_fit(f"{pad}{sub.name + '/':<20} {first_line(sub / '__init__.py')}"))
        if sub.name != "emulator" or depth == 1:
            out.extend(entries(sub, depth + 1))
    return out


def _fit(line: str) -> str:
    """Wrap a long description under itself, at word boundaries."""
    name_width = len(line) - len(line.lstrip()) + 21
    return "\n".join(textwrap.wrap(line, WIDTH, subsequent_indent=" " * name_width,
                                    drop_whitespace=True)) if len(line) > WIDTH else line


def render() -> str:
    return "\n".join([START, "```", "batchcopy/", *entries(PKG), "```", END])


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        start, end = readme.find(START), readme.find(END)
        if start < 0 or end < 0 or readme[start:end + len(END)] != text:
            print("README.md's module map is not the tree's: run python dev/module_map.py "
                  "--write", file=sys.stderr)
            return 1
        return 0
    if "--write" in argv:
        path = ROOT / "README.md"
        readme = path.read_text(encoding="utf-8")
        start, end = readme.find(START), readme.find(END)
        if start < 0 or end < 0:
            print("README.md has no module map markers", file=sys.stderr)
            return 1
        path.write_text(readme[:start] + text + readme[end + len(END):], encoding="utf-8")
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
