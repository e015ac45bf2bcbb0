"""The driver on real Ray: an embedded local Ray, a failing job, caching, and the job matrix."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.cluster.experiment_run import run_experiment
from orchestrator.cluster.plan import plan_jobs
from orchestrator.cluster.session import ResourceError, check_resources, ray_session
from orchestrator.run import main
from tasks.data.preparation import prepare, rows_hash
from tasks.logits import read_logits
from tests.helpers.specs import shrunk_spec

pytestmark = pytest.mark.slow


def run_spec(root: Path, results: Path, *overrides: str):
    """Tiny models x 2 folds x 1 epoch on one fake GPU slot (2 CPUs per worker)."""
    return shrunk_spec(root, results, "resources.cpus_per_worker=2", "resources.max_failures=0", *overrides,
                       name="runtest")


def test_dry_run_plans_longest_first_and_hashes_settings(synth_root, tmp_path, capsys):
    spec = run_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: resnet18}]")
    dataset = prepare(spec, verbose=False)
    plans = plan_jobs(spec, rows_hash(spec, dataset))
    assert [p.backbone for p in plans] == ["resnet18"] * 2 + ["test_convnext"] * 2  # big first
    assert all(p.state == "to run" for p in plans) and len({p.job_id for p in plans}) == 4
    changed = run_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: resnet18}]",
                       "models.1.train.epochs=3")
    again = {p.job_id for p in plan_jobs(changed, rows_hash(changed, dataset))}
    assert {p.job_id for p in plans if p.backbone == "test_convnext"} <= again
    assert not {p.job_id for p in plans if p.backbone == "resnet18"} & again
    ddp = run_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: resnet18}]",
                   "resources.workers_per_job=2")
    assert not {p.job_id for p in plans} & {p.job_id for p in plan_jobs(ddp, rows_hash(ddp, dataset))}
    code = main(["experiments/demo.yaml", "--dry-run", "--set", f"data.root={synth_root}",
                 "--set", f"results_dir={tmp_path}", "--set", "name=runtest"])
    assert code == 0
    out = capsys.readouterr().err
    assert "to run" in out and "fake_gpu=1" in out and "0 cached" in out
    assert all(len(line) <= 80 for line in out.splitlines() if "-fold" in line)  # the plan fits a terminal


def test_unsatisfiable_resources_fail_fast(synth_root, tmp_path):
    spec = run_spec(synth_root, tmp_path, "resources.slot=fake_gpu")
    typo = run_spec(synth_root, tmp_path, "resources.slot=fake_gpus")
    with ray_session(spec, None):
        assert check_resources(spec.resources) == 1
        with pytest.raises(ResourceError, match="fake_gpus=1"):
            check_resources(typo.resources)
        wide = run_spec(synth_root, tmp_path, "resources.slot=fake_gpu", "resources.workers_per_job=1000")
        with pytest.raises(ResourceError, match="needs 1000 worker"):
            check_resources(wide.resources)


def test_failed_job_reported_others_finish_rerun_retries_only_it(synth_root, tmp_path, capsys):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    # "a_broken" sorts first at equal cost, so its two jobs take both slots first and fail:
    # the jobs after them only run if their slots were released.
    spec = run_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, "
                    f"{{backbone: test_convnext, name: a_broken, pretrained_path: {bad}}}]",
                    "resources.cpus_per_worker=1")
    first = run_experiment(spec)
    assert sorted(first.failed) == sorted(p for p in first.done + first.failed if p.startswith("a_broken"))
    assert len(first.failed) == 2 and len(first.done) == 2
    assert first.gathered.models == ("test_convnext",) and first.gathered.incomplete == ("a_broken",)
    log = next((spec.out_dir / "logs").glob("a_broken-fold0-*.log")).read_text()
    assert "FAILED" in log and "Traceback" in log
    assert "PretrainedError: models[a_broken].pretrained_path:" in log and "corrupt.pth" in log
    oof, logits, _ = read_logits(spec.out_dir / "oof.parquet")
    dataset = prepare(spec, verbose=False)
    assert sorted(oof["image_key"]) == sorted(dataset.train["image_key"])  # each image once
    for result_json in (spec.out_dir / "jobs").glob("*/result.json"):  # collected: paths in results/
        job_dir = result_json.parent
        assert json.loads(result_json.read_text())["oof_path"] == str(job_dir / "oof.parquet")
        assert len(list((job_dir / "tb").glob("events.out.tfevents.*"))) == 1  # its TensorBoard events
    assert not list((spec.out_dir / "ray").glob("tune-*/**/events.out.tfevents.*"))  # none from Tune's loggers
    board = pd.read_csv(spec.out_dir / "leaderboard.csv")
    assert set(board["fold"].astype(str)) == {"0", "1", "mean", "sd"}
    scores = board[board.fold.astype(str).isin(["0", "1"]) & (board.model == "test_convnext")].macro_f1
    sd = board[(board.fold.astype(str) == "sd") & (board.model == "test_convnext")].macro_f1.item()
    assert abs(sd - scores.std(ddof=1)) < 1e-4  # the sample sd over folds, named as such
    capsys.readouterr()
    second = run_experiment(spec)
    assert sorted(second.failed) == sorted(first.failed) and second.done == ()
    assert sorted(second.cached) == sorted(first.done)  # finished jobs are never repeated
    assert second.interrupted == () and second.not_started == ()
    _, again, _ = read_logits(spec.out_dir / "oof.parquet")
    assert np.array_equal(logits, again)


def test_autoscaler_node_types_count_as_capacity(tmp_path):
    from orchestrator.cluster.session import _fits, autoscaler_node_types

    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text("available_node_types:\n  head: {resources: {CPU: 0}, max_workers: 0}\n"
                      "  v100_x4: {resources: {CPU: 32, GPU: 4}, max_workers: 2}\n")
    types = autoscaler_node_types(config)
    bundle = {"CPU": 4, "GPU": 1}
    assert sum(_fits(node, bundle) * count for node, count in types) == 8
    assert autoscaler_node_types(tmp_path / "absent.yaml") == []


def own_interface_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (SIOCGIFADDR per interface)."""
    import fcntl
    import socket
    import struct

    found = []
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    return [a for a in found if not a.startswith("127.")]


def test_local_ray_listens_on_loopback_only(synth_root, tmp_path):
    import socket

    import ray

    outside = own_interface_addresses()
    if not outside:
        pytest.skip("this machine has no non-loopback address to try Ray's ports from")
    spec = run_spec(synth_root, tmp_path)
    with ray_session(spec, None):
        [node] = ray.nodes()
        gcs_port = int(ray.get_runtime_context().gcs_address.rpartition(":")[2])
        ports = [gcs_port, node["NodeManagerPort"], node["ObjectManagerPort"]]
        assert node["NodeManagerAddress"] == "127.0.0.1"
        for port in ports:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((outside[0], port), timeout=5).close()
