"""The search: its spec section, a trial's per-epoch score, best.yaml, and a real search on Ray
(ASHA stopping trials, a killed search resumed without repeating finished trials)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator import run
from orchestrator.analysis.search_outputs import best_row, best_yaml, write_search_outputs
from orchestrator.cluster.trial import TrialScore
from tasks.job_io import job_hash
from tasks.spec.experiment import SpecError
from tasks.spec.load import load_spec, sampled_spec
from tests.helpers.specs import REPO

SEARCH_DEMO = REPO / "experiments" / "search_demo.yaml"


def search_spec(tmp_path, *overrides):
    return load_spec(SEARCH_DEMO, [f"results_dir={tmp_path}", *overrides], check_data=False)


@pytest.mark.parametrize("override, message", [
    ("search.space.train.optimizer.lrr={uniform: [0.1, 0.2]}", "search.space.train.optimizer.lrr: no such field"),
    ("search.space.data.cache_size={choice: [[64, 48]]}", "search.space.data.cache_size: only train.*, models.*"),
    ("search.space.train.optimizer.lr={uniform: [0.2, 0.1]}", "search.space.train.optimizer.lr: uniform: need low < high"),
    ("search.space.train.optimizer.lr={loguniform: [0, 0.1]}", "low > 0"),
    ("search.space.train.optimizer.lr={normal: [1, 2]}", "search.space.train.optimizer.lr.normal: unknown field"),
    ("search.space.train.optimizer.lr={uniform: [0.1, 0.2], choice: [0.3]}", "give exactly one of"),
    ("search.searcher=grid", "searcher grid needs `choice` lists; train.optimizer.lr"),
    ("search.folds=[0, 3]", "search.folds: fold 3 is outside 0..2"),
    ("search.scheduler=hyperband", "search.scheduler"),
])
def test_a_bad_search_section_names_the_field(tmp_path, override, message):
    with pytest.raises(SpecError) as err:
        search_spec(tmp_path, override)
    assert message in str(err.value)


def test_nested_set_and_model_train_paths_are_searchable(tmp_path):
    spec = search_spec(tmp_path, "search.space.models.0.train.drop_rate={uniform: [0.0, 0.5]}",
                       "search.space.train.epochs={randint: [2, 4]}")
    assert {"models.0.train.drop_rate", "train.epochs", "train.optimizer.lr"} <= set(spec.search.space)
    assert spec.search.space["train.epochs"].randint == (2, 4)


def test_the_search_section_changes_no_job_identity(tmp_path):
    with_search = search_spec(tmp_path)
    without = load_spec(SEARCH_DEMO, [f"results_dir={tmp_path}", "search=null"], check_data=False)
    assert with_search.spec_hash() == without.spec_hash()
    model = with_search.models[0]
    assert (job_hash(with_search, model, with_search.train_for(model), 0, "rows")
            == job_hash(without, model, without.train_for(model), 0, "rows"))


def test_sampled_values_are_validated_like_a_written_spec(tmp_path):
    base = search_spec(tmp_path).model_dump(mode="json")
    spec = sampled_spec(base, {"train.optimizer.lr": 1e-3, "train.age_borders.1": 58, "models.0.backbone": "test_vit"})
    assert spec.search is None and spec.train.optimizer.lr == 1e-3 and spec.train.age_borders == (30, 58)
    assert spec.models[0].name == "test_vit"  # named after its backbone, it follows the sampled one
    with pytest.raises(ValueError, match="train.age_borders: borders must increase"):
        sampled_spec(base, {"train.age_borders.1": 20})


def test_grid_counts_every_combination(tmp_path):
    spec = search_spec(tmp_path, "search.searcher=grid", "search.num_samples=null",
                       "search.space={train.optimizer.lr: {choice: [0.1, 0.01]}, train.mix.prob: {choice: [0, 0.2, 0.4]}}")
    assert spec.search.trials == 6


def test_trial_score_waits_for_every_job_and_holds_stopped_ones():
    score = TrialScore(("a", "b"), max_epochs=4)
    score.add_epoch("a", 1, 0.30, 0.30)
    score.add_epoch("a", 2, 0.40, 0.40)
    assert score.ready() == []  # b has not reported epoch 1
    score.add_epoch("b", 1, 0.10, 0.10)
    assert [(r["epoch"], round(r["val_macro_f1"], 4)) for r in score.ready()] == [(1, 0.2)]
    score.add_epoch("b", 1, 0.99, 0.99)  # a restarted worker repeats an epoch: the first counts
    score.add_epoch("b", 2, 0.20, 0.15)
    score.add_epoch("b", 3, 0.50, 0.50)
    rows = score.ready()
    assert [(r["epoch"], round(r["val_macro_f1"], 4), round(r["epoch_macro_f1"], 4)) for r in rows] == [(2, 0.3, 0.275)]
    score.finish("a", 0.45, 2)  # a stopped by patience after epoch 2: its best holds for later epochs
    rows = score.ready()
    assert [(r["epoch"], round(r["val_macro_f1"], 4)) for r in rows] == [(3, 0.45)]
    score.add_epoch("b", 4, 0.60, 0.60)
    assert score.ready() == []  # the last epoch waits for b's outputs, so the trial ends complete
    score.finish("b", 0.62, 4)
    rows = score.ready()
    assert [(r["epoch"], round(r["val_macro_f1"], 4)) for r in rows] == [(4, 0.5)]
    assert score.complete and score.final()["oof_macro_f1"] == pytest.approx(0.535)


def test_a_resumed_job_s_earlier_epochs_take_its_best_so_far():
    score = TrialScore(("a",), max_epochs=4)
    score.add_epoch("a", 3, 0.5, 0.4)  # resumed from its checkpoint after epoch 2
    assert [(r["epoch"], r["val_macro_f1"], r["epoch_macro_f1"]) for r in score.ready()] == [
        (1, 0.5, 0.4), (2, 0.5, 0.4), (3, 0.5, 0.4)]


def test_a_job_restored_after_its_end_scores_its_epochs_by_its_oof():
    score = TrialScore(("a",), max_epochs=3)
    score.finish("a", 0.7, 3)  # a final report with no epoch reports before it
    assert [(r["epoch"], r["val_macro_f1"]) for r in score.ready()] == [(1, 0.7), (2, 0.7), (3, 0.7)]


def fake_trials(spec) -> pd.DataFrame:
    rows = [("t1", 3e-3, 1e-4, 58, 0.1, 0.61, 0.63, 6, "done"), ("t2", 1e-3, 1e-5, 60, 0.3, 0.72, 0.70, 6, "done"),
            ("t3", 8e-3, 1e-3, 57, 0.5, 0.80, None, 2, "stopped early"), ("t4", 5e-4, 1e-6, 59, 0.2, None, None, 0, "error")]
    paths = list(spec.search.space)
    return pd.DataFrame([{"trial": r[0], **dict(zip(paths, r[1:5])), "val_macro_f1": r[5], "oof_macro_f1": r[6],
                          "epochs": r[7], "stopped_early": r[8] == "stopped early", "status": r[8], "error": "",
                          "seconds": 10.0, "finished_at": i} for i, r in enumerate(rows)])


def test_best_is_the_best_finished_trial_and_its_yaml_runs_as_written(tmp_path, synth_root, capsys):
    spec = search_spec(tmp_path, f"data.root={synth_root}").resolved()
    trials = fake_trials(spec)
    assert best_row(trials)["trial"] == "t2"  # t3 scored higher, but on 2 epochs: stopped, not finished
    best = write_search_outputs(spec, trials, tmp_path / "out")
    assert best.trial == "t2" and best.values["train.age_borders.1"] == 60
    back = load_spec(best.spec_path)
    assert back.name == f"{spec.name}-best" and back.search is None
    assert back.train.optimizer.lr == 1e-3 and back.train.optimizer.weight_decay == 1e-5
    assert back.train.mix.prob == 0.3 and back.train.age_borders == (30, 60)
    assert back.models == spec.models and back.data.root == spec.data.root
    assert pd.read_csv(tmp_path / "out" / "trials.csv")["trial"].tolist() == ["t1", "t2", "t3", "t4"]
    assert run.main([str(best.spec_path), "--dry-run"]) == 0
    assert "3 jobs: 0 cached, 3 to run" in capsys.readouterr().err


def test_stopped_trials_only_still_give_a_best(tmp_path):
    spec = search_spec(tmp_path)
    trials = fake_trials(spec)
    trials["status"] = ["stopped early", "stopped early", "error", "error"]  # t3's 0.80: an error
    assert best_row(trials)["trial"] == "t2"
    text = best_yaml(spec.resolved(), {p: trials.loc[1, p] for p in spec.search.space}, best_row(trials))
    assert "stopped early" in text.splitlines()[0] and yaml.safe_load(text)["name"] == "search_demo-best"


def test_an_interrupted_trial_never_gives_the_best(tmp_path):
    """Ctrl-C before any trial finished: the unfinished trials resume later, so none is "the best"."""
    spec = search_spec(tmp_path).resolved()
    trials = fake_trials(spec)
    trials["status"] = ["interrupted", "interrupted", "interrupted", "error"]
    assert best_row(trials) is None
    assert write_search_outputs(spec, trials, tmp_path / "out") is None
    assert not (tmp_path / "out" / "best.yaml").exists() and (tmp_path / "out" / "trials.csv").exists()
    trials["status"] = ["interrupted", "stopped early", "interrupted", "not started"]
    assert best_row(trials)["trial"] == "t2"  # t3 scored higher, but it is to resume


class Planted:
    """A pickle that creates a file when it is loaded: what a foreign tuner.pkl could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_search_state_that_someone_else_could_have_written_is_never_unpickled(tmp_path):
    import pickle

    from orchestrator.cluster.tune_trust import UntrustedState, check_trusted

    state = tmp_path / "search-1234"
    (state / "trial_a").mkdir(parents=True)
    for path in (state / "tuner.pkl", state / "trial_a" / "params.pkl"):
        path.write_bytes(pickle.dumps(Planted(tmp_path / "PWNED")))
    check_trusted(str(state))  # yours, writable by you alone: resumed
    check_trusted(f"file://{state}")
    check_trusted(str(tmp_path / "nothing_yet"))  # a first run: nothing to restore
    check_trusted("s3://bucket/runs/search-1234")  # a bucket: its own access control
    for path, change, problem in [
            (state / "tuner.pkl", lambda p: os.chmod(p, 0o646), "tuner.pkl is writable by every user (mode 0646)"),
            (state / "tuner.pkl", lambda p: os.chown(p, 65534, -1), "tuner.pkl is owned by "),
            (state / "trial_a" / "params.pkl", lambda p: os.chown(p, 65534, -1), "trial_a/params.pkl is owned by "),
            (state, lambda p: os.chmod(p, 0o757), f"{state} is writable by every user (mode 0757)")]:
        saved = path.stat()
        change(path)
        with pytest.raises(UntrustedState) as info:
            check_trusted(str(state))
        assert problem in str(info.value) and "chmod -R go-w" in str(info.value) and "\n" not in str(info.value)
        os.chown(path, saved.st_uid, saved.st_gid)
        os.chmod(path, saved.st_mode)
    check_trusted(str(state))
    assert not (tmp_path / "PWNED").exists()


class TuneStarted(Exception):
    """Raised where the search would hand its trainable to Tune (to start or restore)."""


def test_a_search_refuses_to_resume_from_a_foreign_folder_in_one_line(synth_root, tmp_path, monkeypatch, capsys):
    """The search checks its state before Tune restores it. Ray is stood in for, and the
    trainable raises TuneStarted: the check must come before it."""
    import contextlib
    import pickle

    from orchestrator import search
    from orchestrator.cluster import tune_trust
    from orchestrator.cluster import tuning as cluster_search

    def tune_started():
        raise TuneStarted

    monkeypatch.setattr(cluster_search, "ray_session", lambda spec, address: contextlib.nullcontext())
    monkeypatch.setattr(cluster_search, "search_slots",
                        lambda spec, storage, address, table: contextlib.nullcontext(8))
    monkeypatch.setattr(cluster_search, "quiet_tune", lambda: None)
    monkeypatch.setattr(cluster_search, "trainable", tune_started)
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)  # restored after the test
    asked = []
    real = tune_trust.check_trusted
    with monkeypatch.context() as spying:
        spying.setattr(tune_trust, "check_trusted", lambda path: asked.append(path) or real(path))
        args = [str(SEARCH_DEMO), "--set", f"data.root={synth_root}", "--set", f"results_dir={tmp_path}",
                "--storage", str(tmp_path / "store")]
        with pytest.raises(TuneStarted):
            search.main(args)  # a first run: nothing to trust yet, Tune would start
    [path] = asked
    assert Path(path).parent == tmp_path / "store"
    Path(path).mkdir()
    (Path(path) / "tuner.pkl").write_bytes(pickle.dumps(Planted(tmp_path / "PWNED")))
    os.chown(Path(path) / "tuner.pkl", 65534, -1)  # someone else's: as in a results folder copied from them
    capsys.readouterr()
    assert search.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    assert f"error: {path}: will not resume this search: {path}/tuner.pkl is owned by " in err
    assert not (tmp_path / "PWNED").exists()


def search_cli(root: Path, results: Path, name: str, *extra: str) -> list[str]:
    """A grid of a good and a hopeless learning rate, one trial at a time (one slot of two
    CPUs): the order is fixed, so ASHA's rung at epoch 2 must stop the second."""
    args = [sys.executable, "-m", "orchestrator.search", str(SEARCH_DEMO)]
    for item in [f"data.root={root}", f"results_dir={results}", f"name={name}", "train.epochs=3",
                 "search.searcher=grid", "search.num_samples=null", "search.grace_epochs=2",
                 "search.reduction_factor=2", "search.space={train.optimizer.lr: {choice: [3.0e-3, 1.0e-7]}}",
                 "train.scheduler.name=none", "resources.cpus_per_worker=2",
                 # small batches: epochs of a few seconds on a warm slot, time for a Ctrl-C in one
                 "train.batch_size=2", *extra]:
        args += ["--set", item]
    return args


def one_thread_env() -> dict[str, str]:
    """The driver's environment with OMP_NUM_THREADS=1, which Ray leaves as set: the slot's two
    CPUs are there to make it the only slot, and two torch threads on a tiny model are slower
    than one (they wait for each other at every layer, the more so on a busy machine)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def saved_as_ended(tune_dir: Path) -> set[str]:
    """Trials that Tune's latest saved experiment state records as ended."""
    from orchestrator.cluster.tuning import saved_statuses

    found = list(tune_dir.glob("search-*"))
    try:
        return {t for t, status in saved_statuses(str(found[0])).items() if status == "TERMINATED"} if found else set()
    except ValueError:  # caught mid-write
        return set()


def start_until(args: list[str], pattern: str, timeout: float = 600):
    """Start the command in its own process group; the process and the first output line
    matching `pattern` (None if it ended first)."""
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=one_thread_env())
    deadline = time.time() + timeout
    for line in proc.stdout:
        found = re.search(pattern, line)
        if found:
            return proc, found
        assert time.time() < deadline, f"no line matching {pattern!r} in {timeout} s"
    return proc, None


@pytest.mark.slow
def test_an_interrupted_search_resumes_and_asha_stops_weak_trials(synth_root, tmp_path, capsys):
    """Ctrl-C in the second trial, once the first has ended and Tune has saved it, then run the
    same command again: the ended trial never runs again, the interrupted one resumes, and
    ASHA still stops the hopeless one at its rung."""
    args = search_cli(synth_root, tmp_path, "s")
    out, tune_dir = tmp_path / "s" / "search", tmp_path / "s" / "search" / "ray"
    first, ended = start_until(args, r"\S+ (?:done|stopped early) (\S+?):? ")
    assert ended, "the search ended before a trial did"
    deadline = time.time() + 120
    while ended.group(1) not in saved_as_ended(tune_dir):  # Tune saves its state every few seconds
        assert time.time() < deadline, "Tune never saved the ended trial"
        time.sleep(0.5)
    epoch = None
    for line in first.stdout:  # then the next trial's first epoch
        epoch = re.search(r"epoch 1/3 (\S+):", line)
        if epoch:
            break
    assert epoch and epoch.group(1) != ended.group(1)
    os.killpg(first.pid, signal.SIGINT)
    assert first.wait(timeout=180) == 130
    progress = {p.parent.name: len(pd.read_csv(p)) for p in tune_dir.glob("search-*/trial_*/progress.csv")}
    trials = pd.read_csv(out / "trials.csv")
    assert trials["status"].tolist() == ["done", "interrupted"], trials

    third = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900, env=one_thread_env())
    assert third.returncode == 0, third.stderr[-3000:]
    assert "resuming the search" in third.stderr
    trials = pd.read_csv(out / "trials.csv")
    assert trials["status"].tolist() == ["done", "stopped early"], trials
    assert trials["train.optimizer.lr"].tolist() == [3e-3, 1e-7] and trials["epochs"].tolist() == [3, 2]
    assert trials["trial"][0] == ended.group(1) and trials["oof_macro_f1"][0] > 0
    # the trial that had ended reported no epoch again
    after = len(pd.read_csv(next(tune_dir.glob(f"search-*/trial_{ended.group(1)}/progress.csv"))))
    assert after == progress[f"trial_{ended.group(1)}"]
    best = load_spec(out / "best.yaml")
    assert best.train.optimizer.lr == 3e-3 and best.name == "s-best"
    assert run.main([str(out / "best.yaml"), "--dry-run"]) == 0
    assert "3 jobs: 0 cached, 3 to run" in capsys.readouterr().err


@pytest.mark.parametrize("searcher", ["optuna", "random"])
def test_the_searchers_sample_inside_the_space_and_make_valid_specs(tmp_path, searcher):
    """Tune's own searchers on our param space, without a cluster: every suggestion is inside
    its range, and the base spec with it validates."""
    from ray.tune.search.variant_generator import generate_variants

    from orchestrator.cluster.tuning import param_space, tune_config

    spec = search_spec(tmp_path, f"search.searcher={searcher}")
    space = param_space(spec, str(tmp_path / "ray"))
    if searcher == "optuna":
        algo = tune_config(spec, 2).search_alg
        assert algo.set_search_properties("val_macro_f1", "max", space)
        # Tune sets the suggested values into the constant rest of the space (SearchGenerator)
        suggestions = [space | algo.suggest(f"t{i}") for i in range(5)]
    else:
        suggestions = [config for _ in range(5) for _, config in generate_variants(space)]
    for config in suggestions:
        values = config["params"]
        assert 3e-4 <= values["train.optimizer.lr"] <= 1e-2 and 0 <= values["train.mix.prob"] <= 0.6
        assert values["train.age_borders.1"] in (57, 58, 59, 60)
        trial = sampled_spec(config["base"], values)
        assert trial.train.optimizer.lr == values["train.optimizer.lr"]
        assert trial.train.age_borders[1] == values["train.age_borders.1"]
    assert len({c["params"]["train.optimizer.lr"] for c in suggestions}) == 5


def test_the_search_logs_its_trials_to_mlflow(tmp_path, monkeypatch):
    from orchestrator.analysis.tracking_logs import log_search
    from tests.test_tracking import isolate, mlflow_runs

    isolate(monkeypatch, tmp_path)
    spec = search_spec(tmp_path, "tracking.mlflow={}").resolved()
    trials = fake_trials(spec)
    log_search(spec, spec.out_dir, trials)
    (run,) = mlflow_runs(spec.tracking.mlflow.tracking_uri, spec.name)
    assert run.info.run_name == "search_demo-search" and run.data.params["searcher"] == "optuna"
    assert run.data.metrics["best_val_macro_f1"] == 0.72  # t3 scored 0.80 but was stopped early
    assert run.data.metrics["trials_done"] == 2 and run.data.metrics["trial_epochs"] == 14
