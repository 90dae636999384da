"""The MLflow UI that `sweeps ui` serves, driven in headless Chromium like a person would.

A real study is run with the CLI, `sweeps ui` serves its store, and Playwright walks
experiment → parent run → child run → metric chart → artifacts, asserting on what is on
screen, and that every page is in MLflow's model-training view (sweeps' `mlflow.app`,
tracking/ui_app.py), not its GenAI view. Screenshots of every step land in
`test-artifacts/ui/` at the repository root.

Needs the system Chromium (`apt-get install chromium`; `.ci/run` installs it) and the
`playwright` package (dev extra); browsers are never downloaded. Without them the test
fails saying what to install (never a silent skip); deselect it explicitly with
`-m "not ui"` on a machine that cannot have Chromium.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.services import free_port
from tests.sweeps.study_helpers import cli_env, run_cli, sweeps_cmd

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.ui]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # runs as root in CI containers
    "--disable-gpu",
    # no calls home: this network refuses them and they only slow the page down
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
STUDY = "ui-demo"
TRIALS = 4
EPOCHS = 10
WEIGHTS = "model_state_dict.pt"  # tracking.mlflow_runs._trial_files
# Set before the app starts: keep MLflow's assistant side panel shut, so screenshots show the
# runs rather than a chat box.
UI_PREFERENCES = """
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""


def _missing(reason: str) -> NoReturn:
    pytest.fail(reason, pytrace=False)


@dataclass(frozen=True)
class Served:
    base_url: str
    study_url: str  # what `sweeps ui --study` prints: the study's runs
    trials: list[dict[str, Any]]  # `sweeps trials --json`


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sweeps ui exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"sweeps ui did not serve in {timeout_s}s: {log.read_text()[-2000:]}")


def _printed_url(log: Path, timeout_s: float) -> str:
    """The link `sweeps ui` prints once the server answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(r"^MLflow UI on (\S+)", log.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise AssertionError(f"sweeps ui printed no link: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A finished, tracked study and `sweeps ui` serving it on a free loopback port."""
    home = tmp_path_factory.mktemp("ui-home")
    env = cli_env(home)
    args = ["--study", STUDY, "--trials", str(TRIALS), "--epochs", str(EPOCHS)]
    done = run_cli("run", *args, "--penalties", "l2,weight_decay", "--quiet", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = run_cli("trials", "--study", STUDY, "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    port = free_port()
    log = home / "ui.log"
    with log.open("wb") as out:
        # its own session: `sweeps ui` execs `mlflow server`, which starts workers; killing
        # the group at teardown ends them all
        proc = subprocess.Popen(
            sweeps_cmd("ui", "--home", str(home), "--port", str(port), "--study", STUDY),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base_url, log, timeout_s=90)
        printed = _printed_url(log, timeout_s=30)
        assert printed.startswith(f"{base_url}/#/experiments/"), printed
        yield Served(base_url, printed, json.loads(listed.stdout))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module", autouse=True)
def require_browser() -> None:
    """Checked first (autouse), before a study is run for a test that cannot drive it."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: apt-get install chromium (as root; `.ci/run` does it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(UI_PREFERENCES)
    # the UI polls and a 2-core machine shared with other tests is slow to render it
    context.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)
    page = context.new_page()
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield page
    context.close()


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def _open_experiment(page: Page, study_url: str) -> None:
    """The link `sweeps ui --study` prints opens the study's runs in the model-training
    view: no mode toggle, no GenAI overview."""
    from playwright.sync_api import expect

    # "load", then wait for elements: the UI polls, so "networkidle" never comes
    page.goto(study_url, wait_until="load")
    expect(page).to_have_url(re.compile(r"#/experiments/\d+/runs"))
    expect(page.get_by_text(f"{TRIALS + 1} matching runs")).to_be_visible()
    _shot(page, "01-study-runs")


def _expand_parent(page: Page, served: Served) -> str:
    """The parent run, named after the study, folds out into one child run per trial.

    Returns the parent run's link (`#/experiments/<id>/runs/<run_id>`).
    """
    from playwright.sync_api import expect

    # the sidebar and breadcrumbs link the study's name too; the run list is the grid
    parent_link = page.get_by_role("link", name=STUDY, exact=True)
    parent_cell = page.get_by_role("gridcell").filter(has=parent_link)
    expect(parent_cell.get_by_role("link")).to_have_attribute(
        "href", re.compile(r"#/experiments/\d+/runs/\w+$")
    )
    _shot(page, "02-experiment")
    parent_cell.get_by_role("button").click()  # the expander in the run-name cell
    children = page.get_by_role("link", name=re.compile(r"^#\d+ "))
    expect(children).to_have_count(TRIALS)
    expected = {f"#{t['number']} {t['penalty']} λ=" for t in served.trials}
    assert {re.sub(r"λ=.*", "λ=", name) for name in children.all_inner_texts()} == expected
    _shot(page, "03-parent-with-children")
    href = parent_cell.get_by_role("link").get_attribute("href")
    assert href is not None
    return href


def _see_model_training_view(page: Page) -> None:
    """The page is in MLflow's model-training view: its sidebar lists the experiment's
    runs and models and links the ML docs; the GenAI view's lists traces, sessions,
    judges and evaluation runs, and links the GenAI docs."""
    from playwright.sync_api import expect

    sidebar = page.get_by_role("navigation")
    runs = sidebar.get_by_role("link", name="Runs", exact=True)
    expect(runs).to_have_attribute("href", re.compile(r"^#/experiments/\d+/runs$"))
    expect(sidebar.get_by_role("link", name="Docs")).to_have_attribute(
        "href", re.compile(r"/docs/latest/ml/$")
    )
    for genai in ("Evaluation runs", "Sessions", "Judges"):
        expect(sidebar.get_by_role("link", name=genai)).to_have_count(0)


def _open_child(page: Page, served: Served, parent_href: str) -> dict[str, Any]:
    """Click trial #0's run: the MLflow run the results table names for it, under the parent,
    with the final w_norm the results table holds, in the model-training view (the link
    carries no view: the UI keeps it per browser, and sweeps' app sets it)."""
    from playwright.sync_api import expect

    trial = next(t for t in served.trials if t["number"] == 0)
    page.get_by_role("link", name=re.compile(r"^#0 ")).click()
    expect(page).to_have_url(re.compile(rf"#/experiments/\d+/runs/{trial['mlflow_run_id']}$"))
    expect(page.get_by_role("heading", name=re.compile(r"^#0 "))).to_be_visible()
    _see_model_training_view(page)
    expect(page.get_by_text("Finished", exact=True)).to_be_visible()
    expect(page.locator(f'a[href="{parent_href}"]')).to_have_text(STUDY)  # "Parent run"
    w_norm = page.get_by_role("row").filter(has=page.get_by_role("link", name="w_norm"))
    expect(w_norm).to_contain_text(repr(trial["w_norm"]))
    _shot(page, "04-child-run")
    return trial


def _see_w_norm_chart(page: Page) -> None:
    """The Model metrics tab plots w_norm's history: one point per epoch."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Model metrics").click()
    # charts below the fold are not rendered; the search box narrows the grid to w_norm
    page.get_by_placeholder("Search metric charts").fill("w_norm")
    card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=page.get_by_role("heading", name="w_norm", exact=True)
    )
    expect(card).to_have_count(1)
    expect(card.get_by_text(re.compile(r"\(w_norm\)$"))).to_be_visible()  # the legend
    # plotly draws a marker per logged step
    expect(card.locator("svg.main-svg .scatterlayer .point")).to_have_count(EPOCHS)
    _shot(page, "05-w-norm-chart")


def _see_artifacts(page: Page, trial: dict[str, Any]) -> None:
    """The Artifacts tab lists config.json and the weights; config.json previews."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Artifacts").click()
    node = page.get_by_test_id("artifact-tree-node")
    expect(node.and_(page.locator(f'[artifact-name="{WEIGHTS}"]'))).to_be_visible()
    node.and_(page.locator('[artifact-name="config.json"]')).click()
    expect(page.get_by_text(f'"penalty": "{trial["penalty"]}"')).to_be_visible()
    expect(page.get_by_text(f'"study": "{STUDY}"')).to_be_visible()
    _shot(page, "06-artifacts")


def _see_parent(page: Page, base_url: str, parent_href: str) -> None:
    """The parent run tells the study: its configuration as params, the best trial as
    tags, the λ figure among its artifacts."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/{parent_href}", wait_until="load")  # a fresh load, no view asked
    expect(page.get_by_role("heading", name=STUDY, exact=True)).to_be_visible()
    _see_model_training_view(page)
    params = page.get_by_role("row").filter(has=page.get_by_text("penalties", exact=True))
    expect(params).to_contain_text("l2,weight_decay")
    expect(page.get_by_text("sweeps.best_penalty", exact=True).first).to_be_visible()
    _shot(page, "07-parent-run")
    page.get_by_role("tab", name="Artifacts").click()
    node = page.get_by_test_id("artifact-tree-node")
    node.and_(page.locator('[artifact-name="lambda_curves.png"]')).click()
    expect(page.locator("img").first).to_be_visible()
    _shot(page, "08-parent-figure")


def test_mlflow_ui_shows_the_study(served: Served, page: Page) -> None:
    assert len(served.trials) == TRIALS
    _open_experiment(page, served.study_url)
    parent_href = _expand_parent(page, served)
    trial = _open_child(page, served, parent_href)
    _see_w_norm_chart(page)
    _see_artifacts(page, trial)
    _see_parent(page, served.base_url, parent_href)
