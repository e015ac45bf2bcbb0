"""cluster.yaml: valid for Ray's own autoscaler schema, and sane for V100 training.

Everything here is offline. The test uses the same steps `ray up` takes before it
first talks to AWS:
    prepare_config()  merges ray/autoscaler/aws/defaults.yaml, fills node-type bounds
    validate_config() checks ray/autoscaler/ray-schema.json, then head type and bounds
It skips only AWSNodeProvider.fillout_available_node_types_resources()
(ec2:DescribeInstanceTypes) and bootstrap_config() (IAM, key pairs, security
groups), the two steps that need credentials and the network. The `offline`
fixture makes any network use fail the test, and leaves no AWS credentials in
reach.
"""
from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
GPU_TYPES = {"p3.2xlarge": (1, 8), "p3.8xlarge": (4, 32)}  # instance -> (V100s, vCPUs)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No sockets and no AWS credentials while the test body runs."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def raw_text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def raw(raw_text) -> dict:
    return yaml.safe_load(raw_text)


def validated(config: dict) -> dict:
    """What `ray up` does with the YAML before any AWS call, on a deep copy."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture
def prepared(raw, offline) -> dict:
    return validated(raw)


def node_types(config):
    return config["available_node_types"]


def worker_types(config):
    return {k: v for k, v in node_types(config).items() if k != config["head_node_type"]}


def all_commands(config) -> str:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return "\n".join(cmd for key in keys for cmd in config.get(key, []))


# --- Ray's own validation ------------------------------------------------------------


def test_validates_with_ray_autoscaler_schema(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["cluster_name"] == "maskfold"


def test_validation_is_offline_and_needs_no_credentials(raw, raw_text, offline):
    # The offline fixture is active here: any socket use or credential lookup
    # would raise instead of reaching AWS.
    prepared = validated(raw)
    assert set(node_types(prepared)) == set(node_types(raw))  # every node type survived validation
    assert all("max_workers" in t and "min_workers" in t for t in node_types(prepared).values())
    assert raw == yaml.safe_load(raw_text)  # validated a copy: the YAML as loaded is untouched


BROKEN = {
    "typo in a top-level key": lambda c: c.__setitem__("idle_timeout_minute", c.pop("idle_timeout_minutes")),
    "typo in a node-type key": lambda c: node_types(c)["v100_x1"].__setitem__(
        "max_worker", node_types(c)["v100_x1"].pop("max_workers")),
    "fractional resource": lambda c: node_types(c)["v100_x1"]["resources"].__setitem__("GPU", 0.5),
    "head type not defined": lambda c: c.__setitem__("head_node_type", "hed"),
    "node type without node_config": lambda c: node_types(c)["v100_x4"].pop("node_config"),
    "min_workers above global max_workers": lambda c: node_types(c)["v100_x1"].__setitem__("min_workers", 99),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_broken_copy_fails_validation(raw, offline, breakage):
    broken = copy.deepcopy(raw)
    BROKEN[breakage](broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validated(broken)


# --- What maskfold needs from the layout ----------------------------------------------


def test_head_takes_no_training_and_hosts_the_drivers(prepared):
    head = node_types(prepared)[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert not any(k.startswith("accelerator_type:") for k in head["resources"])
    assert head["resources"].get("CPU") == 0, "CPU 0 keeps training tasks off the head"
    assert set(head["resources"]) == {"CPU"}  # trials use Ray's own node:__internal_head__
    assert head["min_workers"] == head["max_workers"] == 0
    assert not head["node_config"]["InstanceType"].startswith(("p", "g"))


def test_worker_types_are_v100_nodes(prepared):
    workers = worker_types(prepared)
    assert {w["node_config"]["InstanceType"] for w in workers.values()} == set(GPU_TYPES)
    for name, w in workers.items():
        gpus, vcpus = GPU_TYPES[w["node_config"]["InstanceType"]]
        res = w["resources"]
        assert res.get("GPU") == gpus, name
        assert res.get("CPU") == vcpus, name
        assert res.get("accelerator_type:V100", 0) >= 1, f"{name}: accelerator_type='V100' could never be scheduled"


def test_worker_bounds_are_sane(prepared):
    total_max = prepared["max_workers"]
    workers = worker_types(prepared)
    for name, w in workers.items():
        assert 0 <= w["min_workers"] <= w["max_workers"] <= total_max, name
    bounds = {w["node_config"]["InstanceType"]: (w["min_workers"], w["max_workers"]) for w in workers.values()}
    assert bounds == {"p3.2xlarge": (0, 4), "p3.8xlarge": (0, 2)}
    assert sum(w["min_workers"] for w in workers.values()) == 0, "idle cluster = head only"
    assert total_max <= sum(w["max_workers"] for w in workers.values())
    assert 1 <= prepared["idle_timeout_minutes"] <= 60


def test_nodes_use_instance_profiles_not_keys(prepared):
    for name, t in node_types(prepared).items():
        arn = t["node_config"].get("IamInstanceProfile", {}).get("Arn", "")
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@/-]+", arn), name


SECRET_PATTERNS = [
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",          # access key ids
    r"aws_secret_access_key",
    r"aws_access_key_id",
    r"AWS_SECRET_ACCESS_KEY",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"RAY_AUTH_TOKEN\s*=",                   # the token file is mounted, never inlined
]


@pytest.mark.parametrize("pattern", SECRET_PATTERNS)
def test_no_secrets_in_file(raw_text, pattern):
    assert not re.search(pattern, raw_text, flags=re.IGNORECASE)


def test_secret_scan_would_catch_a_key():
    leaked = "aws_access_key_id = AKIAABCDEFGHIJKLMNOP"
    assert re.search(SECRET_PATTERNS[0], leaked, flags=re.IGNORECASE)


def test_torch_is_a_cuda12_build_installed_before_requirements(prepared):
    setup = prepared["setup_commands"]
    torch_idx = next(i for i, c in enumerate(setup) if re.search(r"install .*\btorch==2\.14\.1\b", c))
    req_idx = next(i for i, c in enumerate(setup) if "-r ~/maskfold/requirements.txt" in c)
    assert torch_idx < req_idx
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cu126\b", setup[torch_idx]), \
        "V100 (sm_70) needs torch's cu126 build; torch 2.14 ships no other CUDA 12 wheel"
    assert not re.search(r"(\s-U\b|--upgrade|--force-reinstall)", setup[req_idx]), \
        "would replace the cu126 torch with the PyPI CUDA 13 wheel"
    # merge_setup_commands() puts the common setup before the per-role commands.
    assert prepared["worker_setup_commands"][: len(setup)] == setup
    assert prepared["head_setup_commands"][: len(setup)] == setup


def test_gpu_nodes_check_sm70_at_setup(raw):
    checks = "\n".join(raw["worker_setup_commands"])
    assert "sm_70" in checks and "nvidia-smi" in checks


def test_code_data_and_run_storage(raw, prepared):
    assert raw["file_mounts"]["/home/ubuntu/maskfold"] == "."
    cmds = all_commands(prepared)
    assert re.search(r"aws s3 sync s3://\S+ ~/maskfold/data", cmds)
    storage = re.search(r"MASKFOLD_STORAGE=\"?(\S+?)\"?'", cmds)
    assert storage and storage.group(1).startswith("s3://"), "Train storage must be shared (S3), not a head-local path"
    assert "data/" in raw["rsync_exclude"] and "results/" in raw["rsync_exclude"]


def test_token_auth_and_dashboard_via_port_forward(raw, raw_text):
    assert raw["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert "export RAY_AUTH_MODE=token" in "\n".join(raw["setup_commands"])
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "ray dashboard cluster.yaml" in raw_text
