"""The cluster recipes: launcher YAMLs against the JSON schema Ray ships, KubeRay manifests for the fields
a GPU study needs, and every study command in them parsed by the study's own command line."""

import json
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ("aws-gpu.yaml", "gcp-gpu.yaml")


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "cluster" / name).read_text())


def check_study_command(command: str) -> None:
    """A ``python studies/NAME.py ARGS`` command: the script exists and its arguments build a study."""
    import argparse

    from meap_scale.cli.study import add_study_options, study_from_args

    argv = shlex.split(command)
    assert argv[0] == "python" and argv[1].startswith("studies/"), command
    assert (REPO / argv[1]).is_file(), f"{argv[1]} does not exist"
    parser = argparse.ArgumentParser()
    add_study_options(parser)
    study = Path(argv[1]).stem
    spec = study_from_args(study, parser.parse_args(argv[2:]))
    assert spec.base.use_gpu, f"{command}: a GPU cluster should run a GPU preset"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_configs_follow_rays_schema(name, ray_schema):
    import jsonschema

    config = load(name)
    jsonschema.validate(config, ray_schema)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head schedules no trial or worker
    workers = [t for k, t in config["available_node_types"].items() if k != config["head_node_type"]]
    assert workers and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)  # autoscaling
    assert all("RAY_AUTH_MODE=token" in c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
               if "ray start" in c)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # one token on every node
    assert any("pip install" in c and "meap-scale" in c for c in config["setup_commands"])


def test_a_launcher_config_with_a_typo_is_refused_by_the_schema(ray_schema):
    import jsonschema

    config = load("aws-gpu.yaml")
    config["available_node_types"]["head"]["min_workerz"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, ray_schema)


def _ray_version(spec: dict) -> tuple[int, ...]:
    return tuple(int(x) for x in spec["rayVersion"].split("."))


def check_ray_cluster_spec(spec: dict) -> None:
    assert _ray_version(spec) >= (2, 52, 0) and spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"]
    for group in spec["workerGroupSpecs"]:
        assert {"groupName", "minReplicas", "maxReplicas", "template"} <= set(group)
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert container["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]


def test_kuberay_raycluster_has_a_gpu_group_token_auth_and_an_idle_head():
    manifest = load("kuberay/raycluster.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster") and manifest["metadata"]["name"]
    check_ray_cluster_spec(manifest["spec"])


def test_kuberay_rayjob_runs_a_study_on_its_own_cluster():
    manifest = load("kuberay/rayjob.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob") and manifest["metadata"]["name"]
    spec = manifest["spec"]
    check_ray_cluster_spec(spec["rayClusterSpec"])
    check_study_command(spec["entrypoint"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["RAY_AUTH_MODE"] == "token"
    assert spec["shutdownAfterJobFinishes"] is True


def test_the_runtime_env_is_one_ray_accepts():
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**load("runtime_env.yaml"))
    assert env["env_vars"]["RAY_AUTH_MODE"] == "token" and ".venv" in env["excludes"]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_study_commands_in_the_launcher_headers_parse(name):
    text = (REPO / "cluster" / name).read_text()
    commands = [line.split("-- ", 1)[1] for line in _joined_comment_lines(text) if "ray job submit" in line]
    assert commands
    for command in commands:
        check_study_command(command)


def _joined_comment_lines(text: str) -> list[str]:
    """Header comment lines, with backslash continuations joined."""
    lines, current = [], ""
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        body = line.lstrip("#").strip()
        current = f"{current} {body.rstrip(chr(92)).strip()}".strip()
        if not body.endswith("\\"):
            lines.append(current)
            current = ""
    return lines
