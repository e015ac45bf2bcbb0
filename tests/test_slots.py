"""Slots on real Ray: a slot's process trains job after job; one killed mid-job resumes; one
past its memory bound is replaced; nothing of a local run listens beyond loopback."""
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from orchestrator.cluster.experiment import run_experiment
from orchestrator.cluster.slot_worker import should_retire
from tasks.job_io import JobResult
from tasks.spec_load import load_spec
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
        assert b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes()  # a process of this run
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
    spec = load_spec(REPO / "experiments/demo.yaml", spec_args(synth_root, tmp_path, "bound", epochs=1, folds=3)
                     + ["resources.slot_memory_gb=0.001"])
    summary = run_experiment(spec)
    assert summary.failed == () and len(summary.done) == 3
    pids = epoch_pids(tmp_path / "bound" / "logs")
    assert len(set().union(*pids.values())) == 3  # every job in a fresh process


def descendants(pid: int) -> set[int]:
    """This process's children, theirs, and so on: only processes this test started."""
    out, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            todo.extend(c for c in children if c not in out)
            out.update(children)
    return out


def listening_addresses(pids: set[int]) -> dict[int, set[str]]:
    """Each process's listening TCP addresses (IPv4 and IPv6), from its socket inodes."""
    listening = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening[fields[9]] = fields[1].rsplit(":", 1)[0]
    out: dict[int, set[str]] = {}
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        found = {listening[i] for i in inodes if i in listening}
        if found:
            out[pid] = found
    return out


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::1, ::ffff:127.0.0.1


@pytest.mark.slow
def test_nothing_of_a_local_run_listens_beyond_loopback_even_data_parallel(synth_root, tmp_path):
    """Every process of the embedded Ray (GCS, raylet, workers, the DDP slot's two Train
    workers with their torch store and gloo sockets), looked at while a job trains."""
    spec = load_spec(REPO / "experiments/demo.yaml", spec_args(synth_root, tmp_path, "exposed", epochs=3, folds=2)
                     + ["resources.slot=fake_gpu", "resources.workers_per_job=2"])
    seen: dict[int, set[str]] = {}
    titles: dict[int, bytes] = {}

    def look():
        wait_for(lambda: epoch_logged(tmp_path / "exposed" / "logs"), 300, "a first epoch")
        seen.update(listening_addresses(descendants(os.getpid())))
        for pid in seen:
            titles[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    summary = run_experiment(spec)
    looker.join()
    assert summary.failed == () and len(summary.done) == 2
    workers = [pid for pid, title in titles.items() if b"RayTrainWorker" in title]
    assert len(workers) == 2 and len(seen) >= 4  # GCS, raylet, ... and both ranks were looked at
    wide = {pid: addrs - LOOPBACK_HEX for pid, addrs in seen.items() if addrs - LOOPBACK_HEX}
    assert not wide, f"listening beyond loopback: {wide}"
