"""The Layout list of docs/development.md names every module of the packages it covers,
and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "sweeps", "tracking", "bench")
ENTRY = re.compile(r"`([\w./]+(?:\.py|/))`")


def listed() -> dict[str, set[str]]:
    """Each package's entries in the Layout list: modules (`x.py`) and subpackages (`x/`),
    relative to the package."""
    text = (ROOT / "docs" / "development.md").read_text()
    layout = text[text.index("Layout") :]
    entries: dict[str, set[str]] = {}
    package = None
    for line in layout.splitlines():
        if head := re.match(r"- `(\w+)/`", line):
            package = head.group(1) if head.group(1) in PACKAGES else None
            line = line[head.end() :]
        elif line and not line.startswith(" "):
            package = None  # past the list
        if package is not None:
            entries.setdefault(package, set()).update(ENTRY.findall(line))
    return entries


def on_disk(package: str) -> set[str]:
    """The package's modules and subpackages; a package's `__init__.py` is named by its
    folder, and migration revisions by theirs."""
    root = ROOT / package
    found: set[str] = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts:
            continue
        if path.name == "__init__.py":
            if relative.parent != Path("."):
                found.add(f"{relative.parent.as_posix()}/")
        elif relative.parent.name != "versions":
            found.add(relative.as_posix())
    return found


def test_the_layout_names_exactly_the_modules_on_disk() -> None:
    entries = listed()
    assert set(entries) == set(PACKAGES)
    for package in PACKAGES:
        missing = sorted(on_disk(package) - entries[package])
        unknown = sorted(entries[package] - on_disk(package))
        assert (missing, unknown) == ([], []), f"{package}/: missing {missing}, unknown {unknown}"
