"""Slots on real Ray: a slot's process trains job after job; one killed mid-job resumes; one
past its memory bound is replaced. (Nothing listening beyond loopback, even data parallel, is
checked in test_cluster's DDP test, on the same run.)"""
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from orchestrator.cluster.experiment_run import run_experiment
from orchestrator.cluster.slots.worker import should_retire
from tasks.job_io import JobResult
from tasks.spec.load import load_spec
from tests.test_cluster import REPO, epoch_logged, logged_worker_pid, spec_args, wait_for


def epoch_pids(log_dir: Path) -> dict[str, set[int]]:
    """The worker pids that reported each job's epochs, as the driver logged them."""
    return {p.stem: {int(m) for m in re.findall(r"epoch \d+/\d+ on \S+ \(pid (\d+)\)", p.read_text())}
            for p in log_dir.glob("*.log")}


def test_should_retire_after_its_jobs_or_past_its_memory():
    assert not should_retire(5, {"max_jobs": 0, "max_rss_gb": 0})  # no limits: never
    assert should_retire(2, {"max_jobs": 2, "max_rss_gb": 0}) and not should_retire(1, {"max_jobs": 2, "max_rss_gb": 0})
    assert should_retire(1, {"max_jobs": 0, "max_rss_gb": 0.001})  # any Python process is past 1 MB
    assert not should_retire(1, {"max_jobs": 0, "max_rss_gb": 1024})


@pytest.mark.slow
def test_a_slot_trains_job_after_job_and_a_killed_worker_resumes_its_job(synth_root, tmp_path):
    """4 jobs on 2 slots: the slots' processes each train several jobs (start-up paid once per
    slot). One is SIGKILLed mid-job: its job resumes from its last epoch, every job finishes."""
    spec = load_spec(REPO / "experiments/demo.yaml", spec_args(synth_root, tmp_path, "slots", epochs=3, folds=4))
    log_dir = tmp_path / "slots" / "logs"
    killed: list[int] = []

    def kill_a_worker():
        wait_for(lambda: epoch_logged(log_dir), 300, "a first epoch")
        pid = logged_worker_pid(log_dir)
        assert b"SlotProcess" in Path(f"/proc/{pid}/cmdline").read_bytes()  # a slot process of this run
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    summary = run_experiment(spec)
    killer.join()
    assert len(killed) == 1
    assert summary.failed == () and len(summary.done) == 4
    results = [JobResult.read(p.parent) for p in (tmp_path / "slots" / "jobs").glob("*/result.json")]
    assert len(results) == 4 and all(r.epochs_run == 3 for r in results)
    pids = epoch_pids(log_dir)
    victim = next(job for job, seen in pids.items() if killed[0] in seen)
    job_log = next((tmp_path / "slots" / "jobs").glob(f"{victim}/job.log")).read_text()
    assert "resumed from a checkpoint" in job_log and "resuming after epoch" in job_log
    everyone = set().union(*pids.values())
    # 2 slot processes at the start, 1 started again after the kill: never one per job
    assert len(everyone) <= 3 < 4 + 1
    assert sum(1 for seen in pids.values() if seen & (everyone - set(killed))) >= 3


@pytest.mark.slow
def test_a_slot_past_its_memory_bound_is_replaced_after_its_job(synth_root, tmp_path):
    """One slot (a worker takes both CPUs), two jobs, a bound every process is past: the second
    job runs in a fresh process."""
    spec = load_spec(REPO / "experiments/demo.yaml", spec_args(synth_root, tmp_path, "bound", epochs=1, folds=2)
                     + ["resources.slot_memory_gb=0.001", "resources.cpus_per_worker=2"])
    summary = run_experiment(spec)
    assert summary.failed == () and len(summary.done) == 2
    pids = epoch_pids(tmp_path / "bound" / "logs")
    assert all(len(seen) == 1 for seen in pids.values()) and len(set().union(*pids.values())) == 2
