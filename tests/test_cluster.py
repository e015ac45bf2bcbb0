"""Fault tolerance on real Ray: a node lost mid-run, and a driver killed mid-run."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.cluster.experiment_run import run_experiment
from tasks.data.preparation import prepare
from tasks.job import train_job
from tasks.job_io import Job, JobResult
from tasks.logits import read_logits
from tasks.spec.load import load_spec
from tests.helpers.procs import LOOPBACK_HEX, descendants, listening_addresses
from tests.helpers.specs import REPO, shrunk_overrides

pytestmark = pytest.mark.slow


def spec_args(root: Path, results: Path, name: str, epochs: int, folds: int) -> list[str]:
    return shrunk_overrides(root, results, f"folds.n_splits={folds}", f"train.epochs={epochs}",
                            f"train.patience={epochs}", "resources.max_failures=3", name=name)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.5)


def jobs_past_an_epoch(log_dir: Path) -> int:
    """How many jobs the driver logged a first epoch of."""
    return sum("epoch 1/" in p.read_text() for p in log_dir.glob("*.log"))


def epoch_logged(log_dir: Path) -> bool:
    return jobs_past_an_epoch(log_dir) >= 1


def test_node_lost_mid_run_every_job_still_finishes(synth_root, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20})
    nodes = [cluster.add_node(num_cpus=1, resources={"fake_gpu": 1}, object_store_memory=80 * 2**20)
             for _ in range(2)]
    cluster.wait_for_nodes()
    spec = load_spec(REPO / "experiments/demo.yaml", spec_args(synth_root, tmp_path, "nodes", epochs=4, folds=3))
    removed = threading.Event()

    def remove_a_busy_node():
        wait_for(lambda: epoch_logged(tmp_path / "nodes" / "logs"), 300, "a first epoch")
        cluster.remove_node(nodes[0])
        removed.set()

    killer = threading.Thread(target=remove_a_busy_node, daemon=True)
    killer.start()
    try:
        summary = run_experiment(spec, address=cluster.address)
    finally:
        cluster.shutdown()
    assert removed.is_set()
    assert summary.failed == () and len(summary.done) == 3
    oof, _, _ = read_logits(spec.out_dir / "oof.parquet")
    dataset = prepare(spec, verbose=False)
    assert oof["image_key"].is_unique and set(oof["image_key"]) == set(dataset.train["image_key"])


def test_killed_driver_resumes_without_retraining(synth_root, tmp_path):
    args = spec_args(synth_root, tmp_path, "killed", epochs=3, folds=3)
    command = [sys.executable, "-m", "orchestrator.run", "experiments/demo.yaml"]
    for a in args:
        command += ["--set", a]
    log_dir = tmp_path / "killed" / "logs"
    first = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    # Not a job's staging folder (.<job>.*.partial, atomic_dir) caught mid-copy by the kill.
    done = lambda: [p for p in (tmp_path / "killed" / "jobs").glob("*/result.json")  # noqa: E731
                    if not p.parent.name.startswith(".")]
    try:
        wait_for(lambda: len(done()) >= 1, 400, "a finished job")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started
        first.wait()
    finished_before = {p.parent.name for p in done()}
    assert 1 <= len(finished_before) < 3
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    for job_id in finished_before:  # trained once: started once, no epoch after the kill
        assert (log_dir / f"{job_id}.log").read_text().count("started") == 1
    # Each resumed job ends as if never interrupted: the same logits and scores as the job run
    # once, start to end, in this process (on one thread, as on its one-CPU Train worker).
    spec = load_spec(REPO / "experiments/demo.yaml", args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for result_json in (tmp_path / "killed" / "jobs").glob("*/result.json"):
            job_dir = result_json.parent
            if job_dir.name in finished_before:
                continue
            got = JobResult.read(job_dir)
            want = train_job(spec, Job(got.model, got.fold, tmp_path / "reference" / job_dir.name), log=lambda line: None)
            _, got_logits, _ = read_logits(job_dir / "oof.parquet")
            _, want_logits, _ = read_logits(tmp_path / "reference" / job_dir.name / "oof.parquet")
            np.testing.assert_allclose(got_logits, want_logits, atol=1e-5)
            assert got.val == pytest.approx(want.val) and got.best_epoch == want.best_epoch
    finally:
        torch.set_num_threads(threads)


def test_ctrl_c_stops_the_jobs_and_says_what_did_not_finish(synth_root, tmp_path):
    """Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) mid-run: the driver
    stops its jobs, counts them, and exits 130, never 0, so `run && blend` stops too."""
    command = [sys.executable, "-m", "orchestrator.run", "experiments/demo.yaml"]
    for a in spec_args(synth_root, tmp_path, "ctrlc", epochs=40, folds=2):  # neither finishes before Ctrl-C
        command += ["--set", a]
    driver = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        # Both slots' runs start on their own; a job no slot took yet would count as not started.
        wait_for(lambda: jobs_past_an_epoch(tmp_path / "ctrlc" / "logs") == 2, 300, "a first epoch of both jobs")
        os.killpg(driver.pid, signal.SIGINT)
        _, err = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted: 2 jobs not finished, run again to resume" in err
    assert "0 done, 0 cached, 0 failed, 2 interrupted, 0 not started" in err, err[-1500:]
    # A log (stderr is a pipe): a line per event from Ray's start on, no escape codes, no Ray lines.
    assert "starting Ray: an embedded one" in err and "starting 2 slots (0 with a job)" in err
    assert "interrupt: stopping the running jobs" in err
    assert "\x1b" not in err and "Token authentication" not in err and "WARNING" not in err, err[-3000:]
    assert not list((tmp_path / "ctrlc" / "jobs").glob("*/result.json"))
    wait_for(lambda: not group_alive(driver.pid), 30, "the local Ray it started to exit")


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def logged_worker_pid(log_dir: Path) -> int:
    """The pid of the Train worker (rank 0) of this run's first job that reported an epoch, as the
    driver logged it: only a process of the cluster this test started."""
    for path in sorted(log_dir.glob("*.log")):
        found = re.search(r"epoch 1/\d+ on \S+ \(pid (\d+)\)", path.read_text())
        if found:
            return int(found.group(1))
    raise AssertionError(f"no epoch with a pid in {log_dir}")


def test_data_parallel_job_survives_a_killed_worker_and_listens_on_loopback_only(synth_root, tmp_path):
    """Two DDP workers per job on an embedded Ray. After the first epoch every process of the
    run (GCS, raylet, workers, both ranks with their torch store and gloo sockets) is looked at:
    none listens beyond loopback. Then one rank is killed: the pair restarts from the last
    epoch's checkpoint and every job finishes."""
    spec = load_spec(REPO / "experiments/demo.yaml", spec_args(synth_root, tmp_path, "ddp", epochs=3, folds=2)
                     + ["resources.slot=fake_gpu", "resources.workers_per_job=2"])
    killed: list[int] = []
    seen: dict[int, set[str]] = {}
    titles: dict[int, bytes] = {}

    def look_then_kill_a_worker():
        wait_for(lambda: epoch_logged(tmp_path / "ddp" / "logs"), 300, "a first epoch")
        seen.update(listening_addresses(descendants(os.getpid())))
        titles.update({pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in seen})
        pid = logged_worker_pid(tmp_path / "ddp" / "logs")
        assert b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=look_then_kill_a_worker, daemon=True)
    killer.start()
    summary = run_experiment(spec)
    assert len(killed) == 1  # a worker was killed mid-run (the results say both jobs ran on 2)
    assert summary.failed == () and len(summary.done) == 2
    jobs = sorted((tmp_path / "ddp" / "jobs").glob("*/result.json"))
    results = [JobResult.read(p.parent) for p in jobs]
    assert [r.workers for r in results] == [2, 2] and all(r.epochs_run == 3 for r in results)
    logs = [(p.parent / "job.log").read_text() for p in jobs]
    resumed = [log for log in logs if "resumed from a checkpoint" in log]
    assert len(resumed) == 1 and "resuming after epoch" in resumed[0]
    oof, _, _ = read_logits(spec.out_dir / "oof.parquet")
    dataset = prepare(spec, verbose=False)
    assert oof["image_key"].is_unique and set(oof["image_key"]) == set(dataset.train["image_key"])
    workers = [pid for pid, title in titles.items() if b"RayTrainWorker" in title]
    assert len(workers) == 2 and len(seen) >= 4  # GCS, raylet, ... and both ranks were looked at
    wide = {pid: addrs - LOOPBACK_HEX for pid, addrs in seen.items() if addrs - LOOPBACK_HEX}
    assert not wide, f"listening beyond loopback: {wide}"
