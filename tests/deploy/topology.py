"""docker/compose.yaml, run without Docker: the same command lines and environments as local
processes against the local PostgreSQL server and a local `mlflow server`.

Only what this module knows how to map is accepted: an unknown service, key, variable,
host, database, volume or dependency raises ComposeDrift, so the compose file cannot drift
from the CLI (or from what these tests exercise) unnoticed.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.services import (
    PASSWORD,
    MlflowServer,
    free_port,
    mlflow_executable,
    role_with_password,
)

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"

# What each service may say. Anything else is drift the test cannot map.
SERVICE_KEYS = {
    "postgres": {"image", "environment", "volumes", "healthcheck", "ports"},
    "mlflow": {
        "build",
        "image",
        "entrypoint",
        "command",
        "environment",
        "volumes",
        "depends_on",
        "healthcheck",
        "ports",
    },
    "create-study": {"image", "command", "environment", "depends_on", "restart"},
    "worker": {"image", "command", "environment", "depends_on", "deploy", "restart"},
}
# The start order compose derives from depends_on, which these tests follow.
DEPENDS_ON = {
    "postgres": {},
    "mlflow": {"postgres": "service_healthy"},
    "create-study": {"postgres": "service_healthy", "mlflow": "service_healthy"},
    "worker": {"create-study": "service_completed_successfully"},
}
SWEEPS_ENV = {"SWEEPS_STORAGE", "SWEEPS_TRACKING_URI", "SWEEPS_HOME", "SWEEPS_THREADS"}
SERVER_PORT = 5000  # the mlflow container's port; the tracking URI must name it
_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?$", re.S)


class ComposeDrift(AssertionError):
    """The compose file says something the local equivalent cannot reproduce."""


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments ignored (what .env.example uses)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ComposeDrift(f"{path.name}: not KEY=VALUE: {line!r}")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}. An unset variable without a default is an error here
    (compose would warn and use an empty string: never what this file means)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("plain"):
            name, op, arg = match.group("plain"), None, ""
        else:
            parts = _BRACED.match(match.group("braced"))
            if parts is None:
                raise ComposeDrift(f"cannot interpolate {match.group(0)!r}")
            name, op, arg = parts.group("name"), parts.group("op"), parts.group("arg") or ""
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if not missing:
            return str(value)
        if op in (":-", "-"):
            return interpolate(arg, env)
        raise ComposeDrift(f"variable {name} is required ({arg or 'no default'})")

    return _VAR.sub(one, text)


def substitute(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [substitute(item, env) for item in node]
    if isinstance(node, dict):
        return {key: substitute(value, env) for key, value in node.items()}
    return node


def variables(text: str) -> set[str]:
    """Names of the variables a compose file uses ($$ escapes excluded)."""
    names = set()
    for match in _VAR.finditer(text):
        braced = _BRACED.match(match.group("braced") or "")
        if match.group("plain"):
            names.add(match.group("plain"))
        elif braced is not None:
            names.add(braced.group("name"))
    return names


def load_compose(env: Mapping[str, str], raw: str | None = None) -> dict[str, Any]:
    """The compose file (or `raw` text) after YAML anchors and interpolation, checked."""
    raw = COMPOSE.read_text() if raw is None else raw
    tree = substitute(yaml.safe_load(raw), env)
    unknown = {k for k in tree if not k.startswith("x-")} - {"name", "services", "volumes"}
    if unknown:
        raise ComposeDrift(f"top-level keys not mapped by the test: {sorted(unknown)}")
    services = tree["services"]
    if set(services) != set(SERVICE_KEYS):
        raise ComposeDrift(f"services {sorted(services)}, the test maps {sorted(SERVICE_KEYS)}")
    for name, service in services.items():
        extra = set(service) - SERVICE_KEYS[name]
        if extra:
            raise ComposeDrift(f"service {name}: keys not mapped by the test: {sorted(extra)}")
        depends = {dep: spec["condition"] for dep, spec in service.get("depends_on", {}).items()}
        if depends != DEPENDS_ON[name]:
            raise ComposeDrift(f"service {name}: depends_on {depends}, the test follows {name}")
    declared = set(tree.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(".") and source not in declared:
                raise ComposeDrift(f"{name}: volume {source!r} is not declared")
    return tree


def dockerfile_entrypoint() -> list[str]:
    """The image's ENTRYPOINT in exec form (what `command` lines are appended to)."""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            value = yaml.safe_load(line.removeprefix("ENTRYPOINT").strip())
            if isinstance(value, list):
                return [str(v) for v in value]
    raise ComposeDrift("docker/Dockerfile has no exec-form ENTRYPOINT")


@dataclass
class Topology:
    """The compose services as local command lines. Hosts `postgres` and `mlflow` are the
    local PostgreSQL server (one fresh database per compose database) and `server`."""

    compose: dict[str, Any]
    env_file: dict[str, str]
    databases: dict[str, str]  # compose database name → local URL (as the admin)
    server: MlflowServer
    home: Path

    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.compose["services"]
        return services

    @property
    def study(self) -> str:
        return self.env_file["STUDY"]

    def replicas(self, service: str) -> int:
        deploy = self.services[service].get("deploy", {})
        if set(deploy) - {"replicas"}:
            raise ComposeDrift(f"{service}: deploy keys not mapped: {sorted(deploy)}")
        return int(deploy.get("replicas", 1))

    def map_postgres_url(self, url: str) -> str:
        """postgresql+psycopg://USER:PASSWORD@postgres:5432/DB → the local database."""
        parsed = sa.make_url(url)
        pg = self.services["postgres"]["environment"]
        expected = (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "postgres", 5432)
        if (parsed.username, parsed.password, parsed.host, parsed.port) != expected:
            raise ComposeDrift(f"URL {parsed} is not the compose PostgreSQL and its user")
        if parsed.database not in self.databases:
            raise ComposeDrift(f"database {parsed.database!r} is not created by the compose file")
        local = sa.make_url(self.databases[parsed.database])
        mapped = parsed.set(host=local.host, port=local.port, database=local.database)
        return mapped.render_as_string(hide_password=False)

    def map_tracking_uri(self, uri: str) -> str:
        if uri != f"http://mlflow:{SERVER_PORT}":
            raise ComposeDrift(f"tracking URI {uri!r} is not the mlflow service")
        return self.server.uri

    def sweeps_env(self, service: str) -> dict[str, str]:
        """The service's environment, mapped, for a `sweeps` process (on top of ours)."""
        env = dict(self.services[service]["environment"])
        if set(env) != SWEEPS_ENV:
            raise ComposeDrift(f"{service}: environment {sorted(env)}, mapped: {SWEEPS_ENV}")
        if env["SWEEPS_HOME"] != "/data":  # the Dockerfile's writable directory
            raise ComposeDrift(f"{service}: SWEEPS_HOME {env['SWEEPS_HOME']!r} is not /data")
        return {
            "SWEEPS_STORAGE": self.map_postgres_url(env["SWEEPS_STORAGE"]),
            "SWEEPS_TRACKING_URI": self.map_tracking_uri(env["SWEEPS_TRACKING_URI"]),
            "SWEEPS_HOME": str(self.home),
            "SWEEPS_THREADS": _thread_count(env["SWEEPS_THREADS"]),
        }

    def sweeps_command(self, service: str) -> list[str]:
        """ENTRYPOINT ["sweeps"] + command, run by this interpreter (`python -m sweeps`)."""
        spec = self.services[service]
        if spec["image"] != self.services["mlflow"]["image"]:
            raise ComposeDrift(f"{service} does not run the image the mlflow service builds")
        if dockerfile_entrypoint() != ["sweeps"]:
            raise ComposeDrift("the image's ENTRYPOINT is not sweeps")
        return [sys.executable, "-m", "sweeps", *map(str, spec["command"])]


def _thread_count(value: str) -> str:
    if not value.isdigit() or int(value) < 1:
        raise ComposeDrift(f"SWEEPS_THREADS {value!r} is not a thread count")
    return value


def mlflow_server_args(topology: Topology, port: int, artifacts: Path) -> list[str]:
    """The mlflow service's entrypoint + command with hosts, port and volume mapped."""
    spec = topology.services["mlflow"]
    build = spec["build"]
    if (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() != (
        DOCKER / "Dockerfile"
    ):
        raise ComposeDrift(f"mlflow builds {build}, not docker/Dockerfile")
    if spec["entrypoint"] != ["mlflow"]:
        raise ComposeDrift(f"mlflow entrypoint {spec['entrypoint']}")
    volumes = dict(v.split(":")[1::-1] for v in spec["volumes"])  # target → source
    args = [mlflow_executable()]
    command = [str(a) for a in spec["command"]]
    for i, arg in enumerate(command):
        option = command[i - 1] if i else ""
        if option == "--backend-store-uri":
            arg = topology.map_postgres_url(arg)
        elif option == "--artifacts-destination":
            if arg not in volumes:
                raise ComposeDrift(f"artifacts at {arg}, which is not a volume of mlflow")
            arg = str(artifacts)
        elif option == "--host":
            # 0.0.0.0 inside the container's network; its port is published on loopback.
            arg = "127.0.0.1"
        elif option == "--port":
            if int(arg) != SERVER_PORT:
                raise ComposeDrift(f"mlflow listens on {arg}, the tracking URI says 5000")
            arg = str(port)
        args.append(arg)
    return args


def check_published_on_loopback(topology: Topology) -> None:
    for name, spec in topology.services.items():
        for port in spec.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                raise ComposeDrift(f"{name} publishes {port!r} beyond loopback")


def initdb_databases() -> set[str]:
    """Databases the initdb scripts create (besides POSTGRES_DB)."""
    found = set()
    for script in sorted((DOCKER / "initdb").iterdir()):
        found |= set(re.findall(r"CREATE DATABASE\s+(\w+)", script.read_text()))
    return found


def env_file_for_test(trials_per_worker: int) -> dict[str, str]:
    """Values a test puts in its .env: a role of its own (roles are server-wide)."""
    return {
        "POSTGRES_USER": f"sweeps_compose_{uuid.uuid4().hex[:8]}",
        "POSTGRES_PASSWORD": PASSWORD,
        "TRIALS_PER_WORKER": str(trials_per_worker),
    }


@contextmanager
def compose_topology(workdir: Path, overrides: Mapping[str, str]) -> Iterator[Topology]:
    """Databases, role, and the mlflow service started from its compose command line.

    `overrides` replace values of docker/.env.example (which must name every variable
    the compose file needs without a default)."""
    env_file = {**read_dotenv(ENV_EXAMPLE), **overrides}
    needed = variables(COMPOSE.read_text()) - set(env_file)
    if needed:
        raise ComposeDrift(f".env.example does not set {sorted(needed)}")
    compose = load_compose(env_file)
    postgres = compose["services"]["postgres"]
    with ExitStack() as stack:
        names = {postgres["environment"]["POSTGRES_DB"], *initdb_databases()}
        databases = {}
        for name in sorted(names):
            url, admin = create_postgres_database(f"sweeps_compose_{name}")
            stack.callback(drop_postgres_database, url, admin)
            databases[name] = url
        pg_env = postgres["environment"]
        role = stack.enter_context(
            role_with_password(
                list(databases.values()), pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"]
            )
        )
        assert role == pg_env["POSTGRES_USER"]
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        server = MlflowServer([], port, workdir / "mlflow.log")
        topology = Topology(compose, env_file, databases, server, workdir / "data")
        check_published_on_loopback(topology)
        server.args = mlflow_server_args(topology, port, workdir / "mlartifacts")
        stack.callback(server.stop)
        server.start()
        yield topology
