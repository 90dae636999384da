"""The fenced code blocks of a Markdown page and what the docs test does with each.

The convention (docs/development.md, "Code blocks in the docs"): the first word of a
block's info string is its language, the other words are flags:

- ```` ```bash ```` and ```` ```python ```` blocks are run (tests/docs/runner.py);
- ```` ```bash no-run ```` (or ``python no-run``) is shown, never run: cluster commands,
  servers, anything long or needing the repository;
- ```` ```LANG file=NAME ```` is written to NAME in the doc's directory, for later blocks
  to use (a module a ``python:`` task imports, a sweep.toml), not run itself;
- ```` ```text ```` is output or a synopsis; ```` ```toml ````, ``yaml``, ``json`` and
  ``ini`` are data and must parse; ``sql`` and ``csv`` are shown as they are;
- any other language, or none, is an error naming the file and line.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RUN = frozenset({"bash", "python"})
NO_RUN = "no-run"
FILE = "file="


def _ini(text: str) -> Any:
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return parser


# Languages shown but not run, and how each is checked (None: shown as it is).
CHECKED: dict[str, Callable[[str], Any] | None] = {
    "text": None,
    "toml": tomllib.loads,
    "yaml": yaml.safe_load,
    "json": json.loads,
    "ini": _ini,
    "sql": None,
    "csv": None,
}


def _python_syntax(text: str) -> None:
    compile(text, "<block>", "exec")


def _bash_syntax(text: str) -> None:
    done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        first = done.stderr.strip().splitlines()[0]
        found = re.match(r"bash: line (\d+): (.*)", first)
        error = SyntaxError(found[2] if found else first)
        error.lineno = int(found[1]) if found else None
        raise error


# Code is checked for its syntax, also where it is not run.
SYNTAX: dict[str, Callable[[str], Any]] = {"python": _python_syntax, "bash": _bash_syntax}
# Commands a runnable bash block must not hold, and why.
NEEDS_NO_RUN = {
    "sweeps ui|mlflow server|mlflow ui": "serves until stopped",
    "ray start|ray stop|sbatch|srun|kubectl|docker|ssh": "needs a cluster or another machine",
    "make": "needs the repository (the blocks run in an empty directory)",
    "pip install|apt-get": "changes the environment the tests run in",
}
_NEEDS_NO_RUN = re.compile(
    "|".join(rf"(^|[\s;&|(/])(?P<c{i}>{pattern})\b" for i, pattern in enumerate(NEEDS_NO_RUN)),
    re.MULTILINE,
)
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    flags: tuple[str, ...]
    text: str

    @property
    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"

    @property
    def file(self) -> str | None:
        """NAME of a `file=NAME` block: written for later blocks, not run."""
        return next((f[len(FILE) :] for f in self.flags if f.startswith(FILE)), None)

    @property
    def runs(self) -> bool:
        return self.language in RUN and NO_RUN not in self.flags and self.file is None


ROOT = Path(__file__).resolve().parents[2]


def _shown(path: Path) -> str:
    """The path as a reader of the repository names it: from its root."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def read_blocks(path: Path) -> tuple[list[Block], list[str]]:
    """Every fenced block of the page, and what is wrong with them (one line each)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    at = 0
    while at < len(lines):
        opened = _OPEN.match(lines[at])
        if opened is None or ("`" in opened["info"] and opened["fence"][0] == "`"):
            at += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((i for i in range(at + 1, len(lines)) if closing.match(lines[i])), None)
        if end is None:
            problems.append(f"{_shown(path)}:{at + 1}: a code block is never closed")
            break
        body = [_dedent(line, indent) for line in lines[at + 1 : end]]
        words = opened["info"].split()
        language = words[0].lower() if words else ""
        block = Block(path, at + 1, language, tuple(words[1:]), "\n".join(body) + "\n")
        blocks.append(block)
        problems += check(block)
        at = end + 1
    return blocks, problems


def _dedent(line: str, indent: int) -> str:
    """A line of a block fenced `indent` spaces in (a list item's), as written."""
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, indent) :]


def check(block: Block) -> list[str]:
    """Why the block breaks the convention, or its data does not parse."""
    mark = "mark it ```bash or ```python (run), ```bash no-run, or ```text (output)"
    if not block.language:
        return [f"{block.where}: a code block without a language: {mark}"]
    if block.language not in RUN and block.language not in CHECKED:
        known = ", ".join(sorted(RUN | CHECKED.keys()))
        return [
            f"{block.where}: ```{block.language} is not a language the docs test knows"
            f" ({known}): {mark}"
        ]
    problems = [
        f"{block.where}: unknown word {flag!r} in the info string (known: {NO_RUN}, {FILE}NAME)"
        for flag in block.flags
        if flag != NO_RUN and not (flag.startswith(FILE) and _safe_name(flag[len(FILE) :]))
    ]
    parse = CHECKED.get(block.language) or SYNTAX.get(block.language)
    if parse is not None:
        try:
            parse(block.text)
        except SyntaxError as e:  # code: the line of the page
            at = f"{_shown(block.path)}:{block.line + (e.lineno or 1)}"
            problems.append(f"{at}: this {block.language} does not parse: {e.msg}")
        except Exception as e:  # any parser's error is the reader's problem
            problems.append(f"{block.where}: this {block.language} does not parse: {e}")
    if block.runs and block.language == "bash":
        found = _NEEDS_NO_RUN.search(re.sub(r"(^|\s)#.*", "", block.text))  # not in comments
        if found:
            group = next(g for g, command in found.groupdict().items() if command)
            why = list(NEEDS_NO_RUN.values())[int(group[1:])]
            problems.append(f"{block.where}: `{found[group]}` {why}: mark the block ```bash no-run")
    return problems


def _safe_name(name: str) -> bool:
    """A plain relative path inside the doc's directory."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts
