"""Connecting to Ray (an embedded local Ray on loopback, or a cluster) and checking that the
jobs can ever be scheduled there."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from orchestrator.cluster.slots.config import worker_resources
from tasks.errors import UserError
from tasks.spec.experiment import Experiment, ResourcesSpec

REPO = Path(__file__).resolve().parents[2]
# Kept small: jobs pass paths and a small spec, never data, through the object store.
OBJECT_STORE_BYTES = 128 * 1024**2
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
             # Long enough for an autoscaler to launch a GPU node; bounded so that a job whose
             # workers cannot start fails (worker.START_RETRIES attempts) instead of waiting.
             "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}
# Ray (2.60) turns token authentication on for every new local cluster and announces it with a
# WARNING that says how to opt out. The embedded Ray keeps it on (it is a second lock beside
# loopback-only), so for it the line is noise on the user's console; its errors still show.
TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


class ResourceError(UserError, RuntimeError):
    """A job asks for resources no node has: Ray would wait for them forever."""


def local_ray_args(res: ResourcesSpec) -> dict:
    """An embedded Ray sized to this machine; a custom slot gets one per worker's CPUs."""
    cpus = os.cpu_count() or 1
    resources = {}
    if res.slot != "GPU":
        resources[res.slot] = max(1, int(cpus // res.cpus_per_worker))
    return {"num_cpus": cpus, "resources": resources, "object_store_memory": OBJECT_STORE_BYTES,
            "include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}


@contextlib.contextmanager
def ray_session(spec: Experiment, address: str | None):
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Workers import `tasks` from this checkout (the same path on every node of a cluster).
    # A faster Train health check cuts 2-4 s of idle waiting from the end of every job; no
    # preemption watcher saves one actor process per job (~2 s; set it to 1 on spot nodes).
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for name, default in TRAIN_ENV.items():
        env[name] = os.environ.get(name, default)
    for name in ("MASKFOLD_CACHE", "HF_HUB_OFFLINE", "HF_HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    address = address or os.environ.get("RAY_ADDRESS")
    with contextlib.nullcontext() if address else loopback_only():
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # address="local": never join some other cluster that happens to run on this machine.
            with quiet_logger(TOKEN_NOTICE_LOGGER):
                ray.init(address="local", runtime_env={"env_vars": env}, **local_ray_args(spec.resources))
        try:
            yield
        finally:
            ray.shutdown()


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR):
    """`name`'s records below `level` dropped for the duration."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@contextlib.contextmanager
def loopback_only():
    """The embedded Ray's servers (GCS, raylet, workers) listen on 127.0.0.1, not every interface.

    Ray binds its servers to the node IP, which it takes from the default route unless told
    that clusters are off (its switch for single-machine macOS/Windows); `_node_ip_address=
    "127.0.0.1"` is turned back into the routable IP. A private constant: ray is pinned.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _fits(node: dict, bundle: dict[str, float]) -> int:
    return int(min(node.get(k, 0) / v for k, v in bundle.items()))


def autoscaler_node_types(path: Path | None = None) -> list[tuple[dict, int]]:
    """(resources, max count) of each node type the autoscaler may launch, if this is a head
    (`ray up` leaves its config in the head's home)."""
    import yaml

    path = path or Path.home() / "ray_bootstrap_config.yaml"
    if not path.exists():
        return []
    types = (yaml.safe_load(path.read_text()) or {}).get("available_node_types", {})
    return [(t.get("resources", {}), int(t.get("max_workers", 0))) for t in types.values()]


def check_resources(res: ResourcesSpec) -> int:
    """How many jobs can run at once; ResourceError if no node can ever hold a job's worker.

    Nodes the autoscaler may still launch count: GPU nodes usually start at zero.
    """
    import ray

    bundle = worker_resources(res) | ({"GPU": 1.0} if res.slot == "GPU" else {})
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    workers = sum(_fits(node, bundle) for node in nodes)
    workers += sum(_fits(node, bundle) * count for node, count in autoscaler_node_types())
    if workers < res.workers_per_job:
        have = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(n.items()) if not k.startswith("node:")
                                   and k not in ("memory", "object_store_memory")) for n in nodes)
        raise ResourceError(
            f"resources: a job needs {res.workers_per_job} worker(s) of "
            f"{', '.join(f'{k}={v:g}' for k, v in bundle.items())} but the cluster's nodes have: {have}. "
            "Check resources.slot, resources.cpus_per_worker and resources.accelerator_type.")
    return max(1, workers // res.workers_per_job)
