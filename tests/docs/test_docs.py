"""The docs cannot drift: every fenced code block of README.md and docs/*.md is run, or
marked as not runnable (tests/docs/blocks.py says how), and the runnable ones run.

`make docs` runs every page's blocks with their output shown, `make docs DOC=docs/cli.md`
one page's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.blocks import ROOT, read_blocks

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_TIMEOUT_S = 480.0  # a hang catcher: a page's blocks take seconds
README_LINES = 250


def _name(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_code_block_is_run_or_marked(doc: Path) -> None:
    _, problems = read_blocks(doc)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_the_code_blocks_run(doc: Path, tmp_path: Path) -> None:
    blocks, _ = read_blocks(doc)
    if not any(block.runs for block in blocks):
        return
    output, code = run_page(doc, tmp_path)
    if code != 0:
        pytest.fail(f"{_name(doc)}: a code block failed; what ran:\n{output[-6000:]}", False)


def run_page(doc: Path, workdir: Path) -> tuple[str, int]:
    """The runner's output and exit code for one page, in its own process."""
    args = [sys.executable, "-m", "tests.docs.runner", str(doc), "--workdir", str(workdir)]
    try:
        done = subprocess.run(
            args, cwd=ROOT, capture_output=True, text=True, timeout=DOC_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        partial = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode()
        return f"{partial}\nstill running after {DOC_TIMEOUT_S:.0f} s", 1
    return done.stdout + done.stderr, done.returncode


def test_the_readme_stays_a_short_front_door() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_LINES, f"README.md has {lines} lines: move details to docs/"


def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text)
    return page


def test_an_unmarked_block_is_named_by_file_and_line(tmp_path: Path) -> None:
    page = _page(tmp_path, "# T\n\n```\nsweeps run\n```\n\n```sh\nls\n```\n")
    _, problems = read_blocks(page)
    assert [p.split(": ")[0] for p in problems] == [f"{page}:3", f"{page}:7"]
    assert "without a language" in problems[0] and "```sh is not a language" in problems[1]


def test_blocks_inside_list_items_and_longer_fences_are_read(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "- item\n\n  ```bash no-run\n  sbatch job.sh\n  ```\n\n"
        "````text\n```bash\nnot a block\n```\n````\n\n~~~toml\na = 1\n~~~\n",
    )
    blocks, problems = read_blocks(page)
    assert problems == []
    assert [(b.line, b.language, b.runs) for b in blocks] == [
        (3, "bash", False),
        (7, "text", False),
        (13, "toml", False),
    ]
    assert blocks[0].text == "sbatch job.sh\n"
    assert blocks[1].text == "```bash\nnot a block\n```\n"


def test_data_must_parse_and_commands_that_cannot_run_must_say_so(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        """\
```toml
study =
```

```bash
sweeps ui --study x
```

```bash
# make sure
sweeps --help
```

```bash norun
ls
```

```python no-run
print("unclosed"
```

```bash no-run
if true; then echo
```
""",
    )
    _, problems = read_blocks(page)
    assert len(problems) == 5, problems
    assert problems[0].startswith(f"{page}:1: this toml does not parse")
    no_run = "mark the block ```bash no-run"
    assert problems[1] == f"{page}:5: `sweeps ui` serves until stopped: {no_run}"
    assert problems[2].startswith(f"{page}:14: unknown word 'norun' in the info string")
    assert problems[3] == f"{page}:19: this python does not parse: '(' was never closed"
    assert problems[4].startswith(f"{page}:24: this bash does not parse: syntax error")


def test_blocks_run_in_order_in_one_directory_and_a_failure_names_its_line(
    tmp_path: Path,
) -> None:
    page = _page(
        tmp_path,
        """\
```python file=greet.py
WHO = 'docs'
```

```bash
echo "home=$SWEEPS_HOME" > seen.txt
command -v sweeps >> seen.txt
```

```python
import greet
from pathlib import Path
seen = Path('seen.txt').read_text()
```

```python no-run
raise SystemExit('never run')
```

```python
print(greet.WHO, seen.splitlines()[0])
assert 'sweeps-data' in seen
1 / 0
```

```bash
echo never
```
""",
    )
    output, code = run_page(page, tmp_path / "work")
    assert code == 1
    home = tmp_path / "work" / "sweeps-data"
    assert f"docs home={home}\n" in output
    assert (tmp_path / "work" / "seen.txt").read_text().splitlines()[1] == str(
        Path(sys.executable).parent / "sweeps"
    )
    assert f'File "{page}", line 23' in output  # the page's own line in the traceback
    assert output.rstrip().endswith(
        f"FAILED {page}:20 (python block): ZeroDivisionError: division by zero"
    )
    assert "never" not in output


def test_a_failing_bash_block_stops_the_page(tmp_path: Path) -> None:
    page = _page(tmp_path, "```bash\necho one\nfalse\necho two\n```\n\n```bash\necho three\n```\n")
    output, code = run_page(page, tmp_path / "work")
    assert code == 1
    assert "one" in output and "two" not in output and "three" not in output
    assert output.rstrip().endswith(f"FAILED {page}:1 (bash block): exit code 1")
