"""docker/k8s/ without a cluster: every manifest against Kubernetes' own schemas
(kubernetes-validate), the KubeRay RayJob's own fields against the shape KubeRay's v1 CRD
gives them (its pod templates against Kubernetes' schemas), and every `sweeps` command
line in them against the CLI's parser."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from sweeps.cli import cli

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
# The oldest Kubernetes whose Job has backoffLimitPerIndex as a stable field, and the newest
# kubernetes-validate knows.
VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
STORE_KEYS = {"SWEEPS_STORAGE": "storage", "SWEEPS_TRACKING_URI": "tracking-uri"}

# The RayJob fields the manifest uses, typed as in KubeRay's CRD (ray.io/v1, rayjobs.ray.io):
# any other field is refused, so a misspelt one fails here rather than in the cluster.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_POD_TEMPLATE = {"type": "object", "required": ["spec"]}
_RAYJOB = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "additionalProperties": False,
            "properties": {
                "entrypoint": {"type": "string"},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["template"],
                            "additionalProperties": False,
                            "properties": {
                                "rayStartParams": _STRINGS,
                                "template": _POD_TEMPLATE,
                            },
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["groupName", "template"],
                                "additionalProperties": False,
                                "properties": {
                                    "groupName": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer", "minimum": 0},
                                    "rayStartParams": _STRINGS,
                                    "template": _POD_TEMPLATE,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
    }


def _resources(kind: str) -> list[dict[str, Any]]:
    return [doc for docs in _manifests().values() for doc in docs if doc["kind"] == kind]


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]]
    if doc["kind"] == "RayJob":
        cluster = doc["spec"]["rayClusterSpec"]
        groups = cluster.get("workerGroupSpecs", [])
        return [cluster["headGroupSpec"]["template"], *(g["template"] for g in groups)]
    return []


def test_there_is_a_study_job_a_worker_job_and_a_rayjob() -> None:
    jobs = {doc["metadata"]["name"]: doc for doc in _resources("Job")}
    assert set(jobs) == {"sweeps-create-study", "sweeps-workers"}
    assert jobs["sweeps-workers"]["spec"]["completionMode"] == "Indexed"
    assert len(_resources("RayJob")) == 1
    assert len(_resources("Secret")) == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_core_resources_are_valid_kubernetes(version: str) -> None:
    for name, docs in _manifests().items():
        for doc in docs:
            if doc["kind"] == "RayJob":
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except jsonschema.ValidationError as e:
                pytest.fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_rayjob_is_kuberay_shaped_with_valid_pod_templates(version: str) -> None:
    (rayjob,) = _resources("RayJob")
    jsonschema.validate(rayjob, _RAYJOB)
    for template in _pod_templates(rayjob):
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "ray"},
            "template": template,
        }
        kubernetes_validate.validate(wrapped, version, strict=True)


def test_the_rayjob_check_refuses_a_misspelt_field() -> None:
    (rayjob,) = _resources("RayJob")
    rayjob["spec"]["shutdownAfterJobFinished"] = rayjob["spec"].pop("shutdownAfterJobFinishes")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rayjob, _RAYJOB)


def test_every_pod_takes_its_stores_from_the_secret() -> None:
    (secret,) = _resources("Secret")
    for docs in _manifests().values():
        for doc in docs:
            for template in _pod_templates(doc):
                for container in template["spec"]["containers"]:
                    env = {e["name"]: e for e in container["env"]}
                    for name, key in STORE_KEYS.items():
                        ref = env[name]["valueFrom"]["secretKeyRef"]
                        assert ref == {"name": secret["metadata"]["name"], "key": key}
                        assert key in secret["stringData"]


def _sweeps_commands() -> list[list[str]]:
    """Every `sweeps` command line: the Jobs' container args (the image's entrypoint is
    `sweeps`, Kubernetes expands `$(VAR)`), the RayJob's entrypoint."""
    commands = []
    for doc in _resources("Job"):
        for container in _pod_templates(doc)[0]["spec"]["containers"]:
            commands.append([arg.replace("$(WORKER_INDEX)", "3") for arg in container["args"]])
    for doc in _resources("RayJob"):
        argv = shlex.split(doc["spec"]["entrypoint"])
        assert argv[0] == "sweeps"
        commands.append(argv[1:])
    return commands


def test_every_command_line_is_one_the_cli_takes() -> None:
    commands = _sweeps_commands()
    assert [c[0] for c in commands] == ["run", "worker", "run"]
    studies = {c[c.index("--study") + 1] for c in commands[:2]}
    assert len(studies) == 1  # the workers join the study the Job creates
    ray = commands[2]
    assert ray[ray.index("--launcher") + 1] == "ray"
    for args in commands:
        _parse(args)


def _parse(args: list[str]) -> None:
    """The CLI's parser on `args` (a subcommand and its options): unknown options and
    values of the wrong type fail; nothing runs."""
    command = cli.get_command(click.Context(cli), args[0])
    assert isinstance(command, click.Command)
    try:
        command.make_context(args[0], args[1:], parent=click.Context(cli, info_name="sweeps"))
    except click.ClickException as e:
        pytest.fail(f"sweeps {shlex.join(args)}: {e.format_message()}")
