"""sweeps' MLflow app (tracking/ui_app.py): MLflow's server app, every page of the UI in
the model-training view. tests/ui drives it in a browser; these check its parts."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from flask import Flask

from sweeps.cli.ui_cmd import ui_app_name
from tracking import ui_app


def _mlflow_ui_build() -> Path:
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "server" / "js" / "build"


def test_the_installation_registers_the_app_for_mlflow_server() -> None:
    assert ui_app_name() == ui_app.APP_NAME, (
        "no `mlflow.app` entry point `sweeps` -> tracking.ui_app:create_app in this"
        " environment: reinstall the package (pip install -e .)"
    )


def test_mlflow_ui_reads_the_view_from_the_key_the_app_sets() -> None:
    """MLflow's bundle keeps the view with its localStorage hook, under the key
    `mlflow.workflowType` version 1 (stored as `mlflow.workflowType_v1`, JSON)."""
    bundle = next((_mlflow_ui_build() / "static" / "js").glob("main.*.js")).read_text()
    assert 'key:"mlflow.workflowType",version:1' in bundle
    assert 'MACHINE_LEARNING="machine_learning"' in bundle
    assert ui_app.WORKFLOW_KEY == "mlflow.workflowType_v1"


def test_the_index_sets_the_view_before_mlflow_ui_loads() -> None:
    html = (_mlflow_ui_build() / "index.html").read_text()
    response = ui_app.model_training_index(html)
    page = response.get_data(as_text=True)
    bundle = re.search(r'<script[^>]* src="[^"]*main\.\w+\.js"', page)
    assert bundle is not None
    assert page.index("<head>") < page.index(ui_app.WORKFLOW_KEY) < bundle.start()
    assert 'localStorage.setItem("mlflow.workflowType_v1", "\\"machine_learning\\"")' in page
    assert page.replace(ui_app._SCRIPT, "") == html  # nothing else changed
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "text/html"


def _app(static: Path) -> Flask:
    """A stand-in for MLflow's server app: its index view and one other route."""
    app = Flask("mlflow-like", static_folder=str(static))
    app.add_url_rule("/", ui_app.INDEX_VIEW, lambda: "MLflow's own explanation")
    app.add_url_rule("/health", "health", lambda: "OK")
    return app


def test_the_app_serves_its_index_and_leaves_the_rest_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "uvicorn", raising=False)
    (tmp_path / "index.html").write_text("<html><head><title>UI</title></head></html>")
    app = _app(tmp_path)
    assert ui_app.create_app(app) is app  # not under uvicorn: the Flask app itself
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert page == f"<html><head>{ui_app._SCRIPT}<title>UI</title></head></html>"
    assert client.get("/health").get_data(as_text=True) == "OK"


def test_without_an_index_page_mlflow_explains(tmp_path: Path) -> None:
    app = _app(tmp_path)  # a source install of MLflow has no built UI
    ui_app.create_app(app)
    assert app.test_client().get("/").get_data(as_text=True) == "MLflow's own explanation"


def test_an_mlflow_without_its_index_view_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no 'serve' view"):
        ui_app.create_app(Flask("other"))
