"""The MLflow UI as `sweeps ui` serves it: MLflow's own server app, with every page opening
in the UI's model-training view instead of its GenAI view.

MLflow's UI keeps the view per browser, in localStorage, and opens runs in the GenAI view
unless told otherwise; this app's index page sets that key to the model-training view
before the UI's bundle loads, so it holds for every page the single-page app shows,
however it was reached. Registered as the `mlflow.app` entry point `sweeps`
(pyproject.toml) and served with `mlflow server --app-name sweeps`, MLflow's supported way
to wrap its server, as its own `basic-auth` app does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask, Response

APP_NAME = "sweeps"  # the entry point's name: `mlflow server --app-name sweeps`
# The UI's own storage key (its useLocalStorage hook appends "_v" and the key's version)
# and value (JSON), as MLflow 3's UI reads and writes them.
WORKFLOW_KEY = "mlflow.workflowType_v1"
MODEL_TRAINING = "machine_learning"
INDEX_VIEW = "serve"  # the endpoint of MLflow's server app that serves the UI's index.html
_SCRIPT = (
    f"<script>localStorage.setItem({json.dumps(WORKFLOW_KEY)},"
    f" {json.dumps(json.dumps(MODEL_TRAINING))})</script>"
)


def create_app(app: Flask | None = None) -> Any:
    """MLflow's server app with the index page replaced (`model_training_index`): the
    Flask app, or under uvicorn (what `mlflow server` runs by default) the FastAPI app MLflow
    builds around it. Called by the server with no argument, as a factory."""
    if app is None:
        from mlflow.server import app as mlflow_app

        app = mlflow_app
    flask_app: Flask = app
    if INDEX_VIEW not in flask_app.view_functions:
        raise RuntimeError(
            f"MLflow's server app has no {INDEX_VIEW!r} view to serve the UI from;"
            " this MLflow version is not one sweeps' UI app supports"
        )
    static = Path(flask_app.static_folder or "")
    original = flask_app.view_functions[INDEX_VIEW]

    def index() -> Any:
        page = static / "index.html"
        if not page.is_file():  # a source install of MLflow: its own explanation
            return original()
        return model_training_index(page.read_text(encoding="utf-8"))

    flask_app.view_functions[INDEX_VIEW] = index
    if "uvicorn" in sys.modules:  # MLflow's own test for being served by uvicorn
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(flask_app)
    return flask_app


def model_training_index(html: str) -> Response:
    """The UI's index page with the view set first thing in its <head>, before the bundle
    that reads it; never cached, so a browser never keeps MLflow's plain page."""
    from flask import Response

    head = html.find("<head>")
    at = head + len("<head>") if head >= 0 else 0
    response = Response(html[:at] + _SCRIPT + html[at:], mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response
