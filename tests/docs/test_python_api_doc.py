"""docs/python-api.md's walk-through runs as written: its ```python blocks, in order, in
one namespace (a notebook's: `__name__` is `__main__`), in a temporary working directory
with SWEEPS_HOME there. Blocks marked `python no-run` are left out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def code_blocks(path: Path, language: str) -> list[str]:
    """The fenced blocks of `path` whose info string is exactly `language` (a block that
    must not run says so: `python no-run`)."""
    text = path.read_text(encoding="utf-8")
    return [m["body"] for m in _FENCE.finditer(text) if m["info"].strip() == language]


def run_python_blocks(path: Path, blocks: list[str]) -> dict[str, object]:
    """Execute the blocks in order in one namespace, as cells of one notebook."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    for index, block in enumerate(blocks, start=1):
        code = compile(block, f"{path.name} (python block {index})", "exec")
        exec(code, namespace)
    return namespace


@pytest.mark.slow
def test_the_python_api_walk_through_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = code_blocks(DOC, "python")
    assert len(blocks) >= 8  # the walk-through, not a lone import
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPS_HOME", str(tmp_path / "sweeps-data"))
    namespace = run_python_blocks(DOC, blocks)
    assert namespace["result"].states == {"COMPLETE": 6}  # type: ignore[attr-defined]
    resumed = namespace["resumed"]
    assert sum(resumed.states.values()) >= 8  # type: ignore[attr-defined]
    assert (tmp_path / "sweeps-data" / "sweeps.db").is_file()
