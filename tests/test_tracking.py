"""Tracking on W&B (offline) and MLflow (file store), read back from disk, no network: one run
per job that a resume continues, fixed metric names, result.json's final F1; dead servers
warn once and the job goes on; tracking changes no job id; the leaderboard and blend runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import blend
from orchestrator.analysis.tracking_logs import log_leaderboard
from orchestrator.cluster.plan import plan_jobs
from tasks.data.preparation import prepare
from tasks.job_io import Job, JobResult
from tasks.spec.experiment import SpecError
from tasks.spec.tracking import TrackingSpec
from tasks.tracking import EPOCH_METRICS, RunInfo, Tracker, open_tracker
from tests.helpers.fake_logits import fake_models, make_people, make_targets, write_experiment
from tests.helpers.specs import REPO, shrunk_spec
from tests.helpers.wandb_records import offline_runs

EPOCHS = 3
FINAL = ("final_macro_f1", "final_accuracy", "final_mask_f1", "final_gender_f1", "final_age_f1", "best_epoch",
         "epochs_run", "job_seconds")


def isolate(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """W&B and MLflow away from the home folder and any real account or server; every variable
    the tracker sets is restored afterwards."""
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        mp.setenv(name, str(tmp / name.lower()))
    for name in ("WANDB_DIR", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_PROJECT"):
        mp.delenv(name, raising=False)
    mp.setenv("MLFLOW_TRACKING_URI", (tmp / "unused-mlruns").as_uri())  # MLflow's default would be ./mlflow.db
    for name in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        mp.setenv(name, "")
        mp.delenv(name)


@pytest.fixture
def env(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def mlflow_runs(uri: str, experiment: str) -> list:
    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


# --- the spec --------------------------------------------------------------------------------

@pytest.mark.parametrize("override, field", [
    ("tracking.wandb.mode=cloud", "tracking.wandb.mode"),
    ("tracking.wandb.projekt=x", "tracking.wandb.projekt: unknown field"),
    ("tracking.wandb.mode=offline", "tracking.wandb.project: Field required"),
    ("tracking.mlflow.tracking_uri=nowhere", "tracking.mlflow.tracking_uri"),
    ("tracking.mlflow.request_retries=-1", "tracking.mlflow.request_retries")])
def test_a_bad_tracking_section_names_the_field(make_spec, override, field):
    with pytest.raises(SpecError) as err:
        make_spec(override)
    assert field in str(err.value)


def test_tracking_changes_no_job_id_and_no_hash(make_spec):
    plain = make_spec()
    tracked = make_spec("tracking.wandb.project=p", "tracking.wandb.mode=online",
                        "tracking.mlflow.tracking_uri=http://127.0.0.1:9")
    assert tracked.tracking.enabled and not plain.tracking.enabled
    assert [p.job_id for p in plan_jobs(tracked, "rows")] == [p.job_id for p in plan_jobs(plain, "rows")]
    assert tracked.spec_hash() == plain.spec_hash() and tracked.shared_hash() == plain.shared_hash()
    assert tracked.resolved().spec_hash() == plain.spec_hash()


def test_resolving_fills_the_defaults_with_absolute_paths(make_spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = make_spec("tracking.wandb.project=p", "tracking.mlflow={}").resolved()
    assert spec.tracking.wandb.group == "t" and spec.tracking.wandb.mode == "offline"
    assert spec.tracking.mlflow.experiment == "t"
    assert spec.tracking.mlflow.tracking_uri == (tmp_path / "t" / "mlruns").as_uri()
    relative = make_spec("tracking.mlflow.tracking_uri=file:runs/here").resolved()
    assert relative.tracking.mlflow.tracking_uri == (tmp_path / "runs" / "here").as_uri()
    server = make_spec("tracking.mlflow.tracking_uri=https://mlflow.example:5000").resolved()
    assert server.tracking.mlflow.tracking_uri == "https://mlflow.example:5000"


def test_without_a_tracking_section_nothing_is_imported():
    code = ("import sys\nfrom pathlib import Path\nfrom tasks.tracking import RunInfo, open_tracker\n"
            "from tasks.spec.tracking import TrackingSpec\n"
            "t = open_tracker(TrackingSpec(), RunInfo('r', 'job', {}, Path('.')))\n"
            "t.metrics({'a': 1.0}, 1); t.close()\n"
            "assert not t.active and not {'wandb', 'mlflow'} & {m.split('.')[0] for m in sys.modules}")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


class Flaky:
    label, hint = "Flaky", "Fix it."

    def __init__(self, fails: bool):
        self.fails, self.calls = fails, 0

    def metrics(self, values, step):
        self.calls += 1
        if self.fails:
            raise ConnectionError("connection refused\nmore detail")


def test_a_failing_backend_warns_once_and_the_others_go_on():
    warnings, bad, good = [], Flaky(True), Flaky(False)
    tracker = Tracker([bad, good], warnings.append)
    for epoch in range(3):
        tracker.metrics({"train_loss": 1.0}, epoch)
    assert bad.calls == 1 and good.calls == 3
    assert len(warnings) == 1 and "Flaky could not log metrics (ConnectionError: connection refused)" in warnings[0]


def test_a_missing_package_or_bad_store_warns_once(env, tmp_path):
    warnings = []
    (tmp_path / "blocked").write_text("a file where the store's folder should be")
    spec = TrackingSpec.model_validate({"mlflow": {"tracking_uri": f"file:{tmp_path / 'blocked' / 'mlruns'}"}})
    tracker = open_tracker(spec, RunInfo("r", "job", {}, tmp_path), warnings.append)
    tracker.metrics({"a": 1.0}, 1)
    tracker.close()
    assert not tracker.active and len(warnings) == 1 and warnings[0].startswith("WARNING tracking: MLflow")


# --- the driver's runs: leaderboard and blend ---------------------------------------------------

TRACKED = ["--set", "tracking.wandb.project=maskfold-test", "--set", "tracking.mlflow={}"]


def test_blend_logs_its_table_and_chosen_method(env, tmp_path, capsys):
    people = make_people(60, 3, seed=1)
    answers = make_targets(100, seed=2)
    exp = write_experiment(tmp_path, people, fake_models(people, answers, 3, {"a": {}, "b": {}}), answers, 3,
                           rounds=5)
    assert blend.main(["--results", str(exp), *TRACKED]) == 0
    weights = json.loads((exp / "blend" / "weights.json").read_text())
    board = pd.read_csv(exp / "blend" / "leaderboard.csv")
    uri = (tmp_path / "results" / "exp" / "mlruns").as_uri()  # the spec's results_dir: tmp_path/results
    (run,) = mlflow_runs(uri, "exp")
    assert run.info.run_name == "exp-blend" and run.data.params["method"] == weights["method"]
    assert run.data.metrics["chosen_nested_macro_f1"] == pytest.approx(weights["nested"]["macro_f1"])
    assert run.data.metrics["chosen_in_sample_macro_f1"] == pytest.approx(weights["in_sample"]["macro_f1"])
    client = mlflow_client(uri)
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "blend_leaderboard.csv", str(tmp_path)))
    assert list(table["method"]) == list(board["method"]) and table["chosen"].sum() == 1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"blend_leaderboard.json",
                                                                         "blend_leaderboard.csv"}
    (wb,) = offline_runs(exp / "wandb")
    assert wb.name == "exp-blend" and wb.job_type == "blend" and wb.group == "exp"
    assert wb.config["method"] == weights["method"]
    assert wb.summary["chosen_nested_macro_f1"] == pytest.approx(weights["nested"]["macro_f1"])
    assert any(row.get("blend_leaderboard/nrows") == len(board) for row in wb.history)


def test_the_run_logs_the_leaderboard(env, make_spec, tmp_path):
    spec = make_spec(*TRACKED[1::2]).resolved()
    spec.out_dir.mkdir(parents=True)
    pd.DataFrame({"model": ["m"] * 4, "backbone": ["b"] * 4, "fold": ["0", "1", "mean", "sd"],
                  "macro_f1": [0.5, 0.7, 0.6, 0.1414]}).to_csv(spec.out_dir / "leaderboard.csv", index=False)
    log_leaderboard(spec, spec.out_dir)
    (run,) = mlflow_runs(spec.tracking.mlflow.tracking_uri, "t")
    assert run.info.run_name == "t-leaderboard"
    assert run.data.metrics["m.macro_f1_mean"] == 0.6 and run.data.metrics["jobs"] == 2
    (wb,) = offline_runs(spec.out_dir / "wandb")
    assert wb.summary["m.macro_f1_mean"] == 0.6 and wb.summary["best_model_macro_f1_mean"] == pytest.approx(0.6)


# --- real jobs ---------------------------------------------------------------------------------

class Crash(RuntimeError):
    pass


def job_spec(root: Path, results: Path, *tracking: str):
    return shrunk_spec(root, results, f"train.epochs={EPOCHS}", f"train.patience={EPOCHS}", "train.batch_size=16",
                       *tracking, name="tracked")


@pytest.fixture(scope="module")
def tracked_job(synth_root, tmp_path_factory):
    """One job on both backends that crashes after epoch 2 and is resumed from its checkpoint."""
    from tasks.job import train_job

    tmp = tmp_path_factory.mktemp("tracked")
    uri = (tmp / "mlruns").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, tmp)
        spec = job_spec(synth_root, tmp, "tracking.wandb.project=maskfold-test", f"tracking.mlflow.tracking_uri={uri}")
        dataset = prepare(spec, verbose=False)
        job, lines = Job("test_convnext", 0, tmp / "jobs" / "test_convnext-fold0-abcd1234"), []

        def crash(report):
            if report.epoch == 2:
                raise Crash

        with pytest.raises(Crash):
            train_job(spec, job, on_epoch=crash, dataset=dataset, log=lines.append)
        result = train_job(spec, job, dataset=dataset, log=lines.append)
        yield spec, dataset, job, result, uri, lines


@pytest.mark.slow
def test_a_job_is_one_mlflow_run_with_fixed_names_and_result_json_scores(tracked_job):
    spec, _, job, result, uri, lines = tracked_job
    assert not [line for line in lines if "WARNING tracking" in line]
    (run,) = mlflow_runs(uri, "tracked")  # the resumed attempt continued the first one's run
    assert run.info.run_name == job.id == "test_convnext-fold0-abcd1234" and run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("model", "fold", "job_id", "experiment", "backbone")} == {
        "model": "test_convnext", "fold": "0", "job_id": job.id, "experiment": "tracked", "backbone": "test_convnext"}
    assert set(EPOCH_METRICS.values()) | set(FINAL) <= set(run.data.metrics)
    history = mlflow_client(uri).get_metric_history(run.info.run_id, "val_macro_f1")
    assert sorted(m.step for m in history) == list(range(1, result.epochs_run + 1)) == [1, 2, 3]
    saved = json.loads((job.out_dir / "result.json").read_text())
    assert run.data.metrics["final_macro_f1"] == pytest.approx(saved["val"]["macro_f1"], abs=1e-12)
    assert run.data.params["optimizer.lr"] == str(spec.train.optimizer.lr) and run.data.params["fold"] == "0"
    assert run.data.params["backbone"] == "test_convnext" and "augment.train" in run.data.params


@pytest.mark.slow
def test_a_job_is_one_wandb_run_across_its_resume(tracked_job):
    spec, _, job, result, _, _ = tracked_job
    attempts = offline_runs(job.out_dir / "wandb")  # the job's own folder: it travels with the job
    assert len(attempts) == 2 and len({a.run_id for a in attempts}) == 1  # one run id, two attempts
    assert {a.name for a in attempts} == {job.id} and {a.group for a in attempts} == {"tracked"}
    assert "fold:0" in attempts[0].tags and "model:test_convnext" in attempts[0].tags
    epochs = [row["epoch"] for a in attempts for row in a.history if "val_macro_f1" in row]
    assert epochs == [1, 2, 3]
    assert set(EPOCH_METRICS.values()) <= set(attempts[1].history[-1]) | {"epoch"}
    saved = JobResult.read(job.out_dir)
    assert attempts[1].summary["final_macro_f1"] == pytest.approx(saved.val["macro_f1"], abs=1e-12)
    assert attempts[0].config["optimizer.lr"] == spec.train.optimizer.lr


@pytest.mark.slow
def test_unreachable_backends_warn_once_each_and_the_job_finishes_the_same(tracked_job, synth_root, tmp_path,
                                                                           monkeypatch):
    from tasks.job import train_job

    tracked, dataset, _, expected, _, _ = tracked_job
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a well-formed key for a server that is not there
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    spec = job_spec(synth_root, tracked.results_dir, "tracking.wandb.project=p", "tracking.wandb.mode=online",
                    "tracking.wandb.init_timeout_s=3", "tracking.mlflow.tracking_uri=http://127.0.0.1:9",
                    "tracking.mlflow.request_retries=0", "tracking.mlflow.request_timeout_s=2")
    lines = []
    result = train_job(spec, Job("test_convnext", 0, tmp_path / "job"), dataset=dataset, log=lines.append)
    warnings = [line for line in lines if "WARNING tracking" in line]
    assert len(warnings) == 2, warnings
    assert sum("W&B could not start a run" in w for w in warnings) == 1
    assert sum("MLflow could not start a run" in w for w in warnings) == 1
    assert result.val == expected.val and result.epochs_run == expected.epochs_run
