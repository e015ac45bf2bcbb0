"""Nothing lost, nothing false, nothing exposed: names that become paths, damaged job outputs,
dry runs, replacing folds, one driver per experiment, file modes, unwritable storage."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import prepare as prepare_cli
from orchestrator.cluster.gather import gather
from orchestrator.cluster.plan import plan_jobs
from orchestrator.cluster.slots.pool import START_RETRIES, slot_trainer
from orchestrator.cluster.storage import StorageError, check_storage
from orchestrator.run import main as run_main
from tasks.atomic import write_text
from tasks.data.preparation import ReplaceError, prepare, rows_hash
from tasks.errors import UserError
from tasks.job import train_job
from tasks.job_io import Job, unfinished_reason
from tasks.lock import ExperimentBusy, experiment_lock
from tasks.spec.experiment import SpecError
from tasks.spec.load import load_spec
from tests.helpers.specs import REPO, shrunk_cli, shrunk_overrides


def overrides(root: Path, results: Path, *more: str) -> list[str]:
    return shrunk_overrides(root, results, *more, name="safe")


def cli_args(root: Path, results: Path, *more: str) -> list[str]:
    return shrunk_cli(root, results, *more, name="safe")


@pytest.mark.parametrize("field", ["models.0.name", "name"])
@pytest.mark.parametrize("value", ["../../../../tmp/ESC", "a/b", ".hidden", "x" * 101])
def test_names_that_become_paths_are_refused(synth_root, tmp_path, field, value):
    with pytest.raises(SpecError, match=rf"{field}: .*not a usable name"):
        load_spec("experiments/demo.yaml", overrides(synth_root, tmp_path, f"{field}={value}"))


def test_a_number_is_a_name(synth_root, tmp_path):
    spec = load_spec("experiments/demo.yaml", overrides(synth_root, tmp_path, "name=2024", "models.0.name=7"))
    assert (spec.name, spec.models[0].name) == ("2024", "7")
    assert spec.out_dir == tmp_path / "2024"


def test_escaping_model_name_is_one_clear_error(synth_root, tmp_path, capsys):
    code = run_main(cli_args(synth_root, tmp_path, "models.0.name=../../../../tmp/ESC"))
    err = capsys.readouterr().err
    assert code == 2 and "models.0.name" in err and "Traceback" not in err
    assert not (tmp_path / "safe").exists()  # nothing was prepared


@pytest.fixture(scope="module")
def finished(synth_root, tmp_path_factory):
    """One real finished job of a 2-fold experiment (1 epoch), in the folder its plan names."""
    results = tmp_path_factory.mktemp("finished")
    spec = load_spec("experiments/demo.yaml", overrides(synth_root, results))
    dataset = prepare(spec, verbose=False)
    plan = plan_jobs(spec, rows_hash(spec, dataset))[0]
    train_job(spec, Job(plan.model, plan.fold, plan.out_dir), dataset=dataset, log=lambda s: None)
    return spec, dataset, plan


def test_a_job_is_cached_only_with_every_output_readable(finished, tmp_path):
    import shutil

    spec, dataset, plan = finished
    assert unfinished_reason(plan.out_dir) is None
    [again] = [p for p in plan_jobs(spec, rows_hash(spec, dataset)) if p.job_id == plan.job_id]
    assert again.cached and again.note == ""
    damaged = tmp_path / "jobs" / plan.job_id
    shutil.copytree(plan.out_dir, damaged)
    (damaged / "oof.parquet").unlink()
    assert unfinished_reason(damaged) == "missing oof.parquet"
    shutil.copy2(plan.out_dir / "oof.parquet", damaged / "oof.parquet")
    (damaged / "test.parquet").write_bytes((plan.out_dir / "test.parquet").read_bytes()[:200])  # truncated
    assert "test.parquet unreadable" in unfinished_reason(damaged)
    (damaged / "test.parquet").write_bytes((plan.out_dir / "test.parquet").read_bytes())
    (damaged / "result.json").write_text("{")
    assert "result.json unreadable" in unfinished_reason(damaged)


def test_a_damaged_job_is_planned_again_and_left_out_of_the_tables(finished):
    spec, dataset, plan = finished
    saved = (plan.out_dir / "oof.parquet").read_bytes()
    (plan.out_dir / "oof.parquet").unlink()
    try:
        [again] = [p for p in plan_jobs(spec, rows_hash(spec, dataset)) if p.job_id == plan.job_id]
        assert again.state == "to run" and again.note == "missing oof.parquet"
        gathered = gather(spec.out_dir, [again], dataset.train["image_key"], dataset.eval["image_key"])
        assert gathered.models == () and gathered.oof_rows == 0  # no FileNotFoundError, nothing gathered
    finally:
        (plan.out_dir / "oof.parquet").write_bytes(saved)


def test_dry_run_writes_nothing(synth_root, tmp_path, capsys):
    assert run_main(cli_args(synth_root, tmp_path) + ["--dry-run"]) == 0
    assert "2 jobs: 0 cached, 2 to run" in capsys.readouterr().err
    assert not (tmp_path / "safe").exists()


def test_dry_run_leaves_an_experiment_as_it_was(finished, capsys):
    spec, _, _ = finished
    before = {p.name: p.read_bytes() for p in spec.out_dir.iterdir() if p.is_file()}
    args = cli_args(spec.data.root, spec.results_dir, "folds.seed=99", "train.optimizer.lr=0.5") + ["--dry-run"]
    assert run_main(args) == 0
    assert {p.name: p.read_bytes() for p in spec.out_dir.iterdir() if p.is_file()} == before


def test_prepare_refuses_to_replace_folds_of_finished_jobs(finished, capsys):
    spec, _, _ = finished
    before = {n: (spec.out_dir / n).read_bytes() for n in ("folds.parquet", "manifest.json", "spec.yaml")}
    other = load_spec("experiments/demo.yaml", overrides(spec.data.root, spec.results_dir, "folds.seed=99"))
    with pytest.raises(ReplaceError, match="1 finished job"):
        prepare(other, verbose=False)
    args = cli_args(spec.data.root, spec.results_dir, "folds.seed=99")
    assert prepare_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "--set name=safe-2" in err and "Traceback" not in err
    assert {n: (spec.out_dir / n).read_bytes() for n in before} == before
    prepare(spec, verbose=False)  # the same settings again: nothing to refuse
    assert (spec.out_dir / "folds.parquet").read_bytes() == before["folds.parquet"]


def test_prepare_force_replaces_the_folds(synth_root, tmp_path):
    spec = load_spec("experiments/demo.yaml", overrides(synth_root, tmp_path))
    prepare(spec, verbose=False)
    (spec.out_dir / "jobs" / "x").mkdir(parents=True)
    (spec.out_dir / "jobs" / "x" / "result.json").write_text("{}")
    before = (spec.out_dir / "folds.parquet").read_bytes()
    assert prepare_cli.main(cli_args(synth_root, tmp_path, "folds.seed=99") + ["--force"]) == 0
    assert (spec.out_dir / "folds.parquet").read_bytes() != before


def test_a_second_driver_refuses_and_names_the_first(synth_root, tmp_path, capsys):
    out = tmp_path / "safe"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from tasks.lock import experiment_lock\n"
                               f"with experiment_lock(Path({str(out)!r}), 'the first driver'):\n"
                               "    print('locked', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_main(cli_args(synth_root, tmp_path)) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "the first driver" in err and "Traceback" not in err
        assert prepare_cli.main(cli_args(synth_root, tmp_path)) == 2
        assert not (out / "folds.parquet").exists()  # refused before preparing anything
    finally:
        holder.kill()
        holder.wait()
    with experiment_lock(out):  # a dead holder leaves no stale lock
        with pytest.raises(ExperimentBusy):
            with experiment_lock(out):
                pass


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_results_get_the_mode_an_ordinary_write_would(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == mode


def test_unwritable_storage_is_refused_before_any_job(synth_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="a_file/sub: cannot write there"):
        check_storage(str(blocker / "sub"))
    check_storage(str(tmp_path / "store"))
    assert list((tmp_path / "store").iterdir()) == []  # the probe is gone
    code = run_main(cli_args(synth_root, tmp_path) + ["--storage", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "--storage" in err and "Traceback" not in err


def test_a_job_whose_workers_cannot_start_is_retried_a_bounded_number_of_times(synth_root, tmp_path):
    spec = load_spec("experiments/demo.yaml", overrides(synth_root, tmp_path))
    trainer = slot_trainer(spec.resources, {}, "slot0-x", str(tmp_path), restarts=5, local=True)
    failures = trainer.run_config.failure_config
    assert 0 < failures.controller_failure_limit == START_RETRIES  # Ray's default, -1, retries forever: a hang
    assert failures.max_failures == 5  # bounded too: the queue bounds each job's attempts


def test_every_launched_job_ends_in_exactly_one_state():
    from orchestrator.cluster.launch import final_state
    from orchestrator.cluster.progress import JobStatus

    running, done, failed = JobStatus("running"), JobStatus("done"), JobStatus("failed")
    assert final_state(done, errored=False, stopped=False) == "done"
    assert final_state(done, errored=False, stopped=True) == "done"  # finished before Ctrl-C: kept
    assert final_state(running, errored=True, stopped=False) == "failed"
    assert final_state(failed, errored=False, stopped=True) == "failed"  # e.g. its outputs not collected
    assert final_state(running, errored=False, stopped=True) == "interrupted"
    assert final_state(None, errored=False, stopped=True) == "not started"
    # Without Ctrl-C a job that never finished is a failure to retry, never "interrupted".
    assert final_state(running, errored=False, stopped=False) == "failed"
    assert final_state(None, errored=False, stopped=False) == "failed"


def test_the_same_job_of_two_experiments_never_shares_a_scratch_folder(tmp_path):
    """Two runs of one spec into two results folders plan the same job ids; their workers'
    node-local folders (deleted and refilled at every start) must still differ."""
    from orchestrator.cluster.slots.worker import scratch_name

    a = {"job_id": "test_convnext-fold0-28b74dad", "storage": str(tmp_path / "a" / "demo" / "ray")}
    b = {**a, "storage": str(tmp_path / "b" / "demo" / "ray")}
    assert scratch_name(a) != scratch_name(b)
    assert scratch_name(a) == scratch_name(dict(a))  # a resumed run finds its own
    assert scratch_name(a).startswith(a["job_id"])  # still readable on the node


@pytest.mark.parametrize("main, extra", [(run_main, ["--dry-run"]), (run_main, []), (prepare_cli.main, [])],
                         ids=["run_dry_run", "run", "prepare"])
def test_a_results_folder_that_is_a_file_is_one_line_and_stays(synth_root, tmp_path, capsys, main, extra):
    (tmp_path / "safe").write_text("my notes")
    assert main(cli_args(synth_root, tmp_path) + extra) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err and "jobs:" not in err, err
    assert f"error: {tmp_path / 'safe'}: the experiment's results folder is a file, not a folder; " in err
    assert "--set name=" in err and (tmp_path / "safe").read_text() == "my notes"


def test_the_lock_refuses_a_results_folder_it_cannot_make(tmp_path):
    """Every driver (run, prepare, search, blend --reinfer, explain) takes the lock first."""
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=f"{tmp_path / 'file' / 'x'}: the experiment's results folder cannot be "
                                        f"made: {tmp_path / 'file'} is a file"):
        with experiment_lock(tmp_path / "file" / "x"):
            pass


def test_a_duplicate_photo_stop_leaves_no_results_folder(data_copy, tmp_path, capsys):
    from tests.test_integrity import copy_person, people_folders

    copy_person(data_copy, people_folders(data_copy)[0], "999999")
    for main in (prepare_cli.main, run_main):
        assert main(cli_args(data_copy, tmp_path / "results")) == 2
        assert "byte-identical to a photo of another person" in capsys.readouterr().err
        assert not (tmp_path / "results" / "safe").exists()  # nor its .lock
    (tmp_path / "results" / "safe").mkdir(parents=True)  # a folder of the user's: kept, with the lock
    assert prepare_cli.main(cli_args(data_copy, tmp_path / "results")) == 2
    assert [p.name for p in (tmp_path / "results" / "safe").iterdir()] == [".lock"]


def _tree(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")} if folder.exists() else {}


def test_a_dry_runs_dataset_writes_no_cache_and_has_the_real_hashes(data_copy, tmp_path):
    """The same rows, data hash and problems as a build (the job ids a dry run prints), whether
    the cache is there or not, and nothing written in either case."""
    from tasks.data.preparation import load_dataset

    next((data_copy / "train/images").glob("*/mask2.*")).write_bytes(b"\xff\xd8 not a photo")
    cache = tmp_path / "cache"
    spec = load_spec("experiments/demo.yaml", overrides(data_copy, tmp_path, f"data.cache_dir={cache}",
                                                        "data.on_bad_image=skip"))
    dry = load_dataset(spec, verbose=False, write_cache=False)
    assert not cache.exists()
    built = load_dataset(spec, verbose=False)
    assert dry.data_hash == built.data_hash and [p.file for p in dry.skipped] == [p.file for p in built.skipped]
    assert len(built.skipped) == 1
    assert dry.train.equals(built.train) and dry.train_cache.sha256 == built.train_cache.sha256
    before = _tree(cache)
    again = load_dataset(spec, verbose=False, write_cache=False)  # reads the built cache's record
    assert again.data_hash == built.data_hash and _tree(cache) == before


def test_run_dry_run_writes_no_cache_entries(synth_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert run_main(cli_args(synth_root, tmp_path, f"data.cache_dir={cache}") + ["--dry-run"]) == 0
    assert "2 jobs: 0 cached, 2 to run" in capsys.readouterr().err
    assert _tree(cache) == {} and not (tmp_path / "safe").exists()
