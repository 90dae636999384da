"""Run a Markdown page's code blocks as a reader would: `python -m tests.docs.runner DOC`
(`make docs DOC=docs/cli.md`).

The blocks run in the page's order in one fresh directory (`--workdir`, else a temporary
one), with SWEEPS_HOME in it, no other SWEEPS_* or MLFLOW_* setting of the caller's,
and the interpreter's bin directory (the virtualenv's) first on PATH, so `sweeps` is this
checkout's command. Each ```bash block runs in a fresh `bash -eu -o pipefail` (files carry
over from block to block, shell variables do not); the ```python blocks share one
namespace in this process, as cells of one notebook would; a `file=NAME` block is written
to NAME. The first block that fails stops the page: its file:line, why, and its output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from tests.docs.blocks import ROOT, Block, read_blocks

BLOCK_TIMEOUT_S = 300.0  # a hang catcher: the docs' blocks take seconds
KEPT = ("SWEEPS_CACHE",)  # the test session's MLflow store template (fast new stores)


def doc_env(workdir: Path) -> dict[str, str]:
    """The caller's environment without its stores, the home in `workdir`, this checkout
    importable and its virtualenv's commands first."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in KEPT or not name.startswith(("SWEEPS_", "MLFLOW_"))
    }
    env["SWEEPS_HOME"] = str(workdir / "sweeps-data")
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["MLFLOW_DISABLE_TELEMETRY"] = env["DO_NOT_TRACK"] = "true"  # no calls home
    return env


def run_doc(doc: Path, workdir: Path) -> int:
    """0 when every block that runs ran; 1 at the first that failed (said on stdout)."""
    blocks, problems = read_blocks(doc)
    if problems:
        print("\n".join(problems))
        return 1
    env = doc_env(workdir)
    os.environ.clear()
    os.environ.update(env)  # the python blocks see what the bash blocks see
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))  # as for a script in that directory
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        if block.file is not None:
            (workdir / block.file).parent.mkdir(parents=True, exist_ok=True)
            (workdir / block.file).write_text(block.text)
            print(f"── {block.where}: wrote {block.file}", flush=True)
        elif block.runs:
            print(f"── {block.where}: {block.language}", flush=True)
            failure = _run_bash(block, env) if block.language == "bash" else _exec(block, namespace)
            if failure:
                print(f"FAILED {block.where} ({block.language} block): {failure}", flush=True)
                return 1
    return 0


def _run_bash(block: Block, env: dict[str, str]) -> str | None:
    try:
        done = subprocess.run(
            ["bash", "-eu", "-o", "pipefail", "-c", block.text],
            env=env,
            stdout=sys.stdout,
            stderr=subprocess.STDOUT,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            f"still running after {BLOCK_TIMEOUT_S:.0f} s: a server or a long run? Shrink it"
            " (fewer trials or epochs) or mark the block ```bash no-run"
        )
    return None if done.returncode == 0 else f"exit code {done.returncode}"


def _exec(block: Block, namespace: dict[str, Any]) -> str | None:
    """The block compiled as lines of the page itself, so a traceback names them."""
    code = compile("\n" * block.line + block.text, str(block.path), "exec")
    try:
        exec(code, namespace)
    except BaseException as e:  # the page's error, whatever it is, reported as its own
        traceback.print_exc(file=sys.stdout)
        return f"{type(e).__name__}: {e}"
    finally:
        sys.stdout.flush()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("doc", type=Path, nargs="+")
    parser.add_argument("--workdir", type=Path, help="an empty directory (default: a new one)")
    args = parser.parse_args(argv)
    failed = 0
    for doc in args.doc:
        doc = doc.resolve()
        if args.workdir is not None and len(args.doc) == 1:
            args.workdir.mkdir(parents=True, exist_ok=True)
            failed |= run_doc(doc, args.workdir.resolve())
            continue
        with tempfile.TemporaryDirectory(prefix="sweeps-doc-") as workdir:
            failed |= _in_child(doc, Path(workdir))
    return failed


def _in_child(doc: Path, workdir: Path) -> int:
    """One page per process: a page's python blocks change the process."""
    args = [sys.executable, "-m", "tests.docs.runner", str(doc), "--workdir", str(workdir)]
    return subprocess.run(args, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
