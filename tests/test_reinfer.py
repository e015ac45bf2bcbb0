"""`blend --reinfer`: OOF and test logits recomputed from the saved fold models on Ray, with and without TTA."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator import blend
from orchestrator.analysis.results_folder import load_experiment
from orchestrator.cluster.experiment_run import run_experiment
from orchestrator.cluster.gather import check_test
from orchestrator.cluster.reinfer import ReinferError, reinfer
from orchestrator.cluster.session import ray_session
from tasks.data.preparation import load_dataset
from tasks.job_io import JobResult
from tasks.logits import read_logits
from tasks.metrics import score
from tasks.spec.techniques import FLIP, NO_TTA, parse_tta
from tasks.train import fold_models as infer
from tasks.train.inference import eval_loader, predict
from tests.helpers.specs import shrunk_spec

pytestmark = pytest.mark.slow


class Mirrored(torch.nn.Module):
    """The net on left-right mirrored images: the flip half of TTA, computed on its own."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(x.flip(3))


@pytest.fixture(scope="module")
def experiment(synth_root, tmp_path_factory):
    """One tiny model x 2 folds x 1 epoch, trained without TTA; its jobs' saved test logits."""
    results = tmp_path_factory.mktemp("reinfer")
    spec = shrunk_spec(synth_root, results, "resources.max_failures=0", name="reinfertest")
    assert not run_experiment(spec).failed
    exp = spec.out_dir.resolve()
    jobs = {d.parent: JobResult.read(d.parent) for d in sorted((exp / "jobs").glob("*/result.json"))}
    assert len(jobs) == 2
    saved = {d: read_logits(d / "test.parquet")[1] for d in jobs}
    return exp, jobs, saved


@pytest.fixture(scope="module")
def ray_connected(experiment):
    """One embedded Ray for every reinfer below: reinfer reuses a connection it finds."""
    exp, _, _ = experiment
    with ray_session(load_experiment(exp), None):
        yield


def job_logits(jobs) -> dict[Path, np.ndarray]:
    return {d: read_logits(d / "test.parquet")[1] for d in jobs}


def oof_logits(jobs) -> dict[Path, np.ndarray]:
    return {d: read_logits(d / "oof.parquet")[1] for d in jobs}


def test_reinfer_without_tta_reproduces_the_saved_logits(experiment, ray_connected, capsys):
    exp, jobs, saved = experiment
    saved_oof = oof_logits(jobs)
    summary = reinfer(load_experiment(exp), exp, tta=NO_TTA)
    assert sorted(r.fold for r in summary.jobs) == [0, 1] and {r.tta for r in summary.jobs} == {"none"}
    assert capsys.readouterr().out.count(" eval images, TTA none, ") == 2  # progress per finished task
    for d, logits in job_logits(jobs).items():
        np.testing.assert_allclose(logits, saved[d], atol=1e-5)
    for d, logits in oof_logits(jobs).items():
        np.testing.assert_allclose(logits, saved_oof[d], atol=1e-5)


def test_reinfer_finds_the_jobs_after_the_data_moved(experiment, ray_connected, synth_root, tmp_path):
    """--set data.root names a copy (copy2 keeps the files' times, as mv and rsync -a do)."""
    exp, jobs, saved = experiment
    moved = tmp_path / "moved"
    shutil.copytree(synth_root, moved)
    summary = reinfer(load_experiment(exp, [f"data.root={moved}"]), exp, tta=NO_TTA)
    assert sorted(r.fold for r in summary.jobs) == [0, 1]
    for d, logits in job_logits(jobs).items():
        np.testing.assert_allclose(logits, saved[d], atol=1e-5)


def test_reinfer_with_tta_is_the_mean_of_plain_and_mirrored(experiment, ray_connected):
    exp, jobs, saved = experiment
    spec = load_experiment(exp)
    reinfer(spec, exp, tta=FLIP)
    dataset = load_dataset(spec, verbose=False)
    for d, logits in job_logits(jobs).items():
        r = jobs[d]
        plain = infer.infer_test(spec, r.model, r.fold, d / "best.pt", tta=NO_TTA, dataset=dataset)
        fm = infer.load_fold_model(spec, r.model, r.fold, d / "best.pt")
        assert fm.device.device.type == "cpu"
        mirrored = predict(Mirrored(fm.net), eval_loader(dataset.eval_cache, dataset.eval, fm.train),
                           fm.device, fm.norm, NO_TTA)
        assert not np.allclose(logits, saved[d], atol=1e-3)
        np.testing.assert_allclose(logits, (plain + mirrored) / 2, atol=1e-5)
    gathered, gathered_logits, _ = read_logits(exp / "test.parquet")  # re-gathered from the new files
    for d, logits in job_logits(jobs).items():
        np.testing.assert_array_equal(gathered_logits[gathered["fold"].to_numpy() == jobs[d].fold], logits)


def test_blend_reinfer_restores_a_missing_test_file(experiment, ray_connected, capsys):
    exp, jobs, saved = experiment
    lost = next(iter(jobs))
    (lost / "test.parquet").unlink()
    code = blend.main(["--results", str(exp), "--reinfer", "--no-tta", "--set", "blend.rounds=5"])
    assert code == 0, capsys.readouterr().err
    assert (exp / "blend" / "submission.csv").is_file()
    for d, logits in job_logits(jobs).items():
        np.testing.assert_allclose(logits, saved[d], atol=1e-5)
    frame, _, _ = read_logits(exp / "test.parquet")
    dataset = load_dataset(load_experiment(exp), verbose=False)
    check_test(frame, dataset.eval["image_key"], {(r.model, r.fold) for r in jobs.values()})


def test_weights_unseen_on_the_node_come_from_train_storage(experiment, ray_connected):
    """As on a cluster whose nodes do not share results/: best.pt is fetched from the job's
    final checkpoint in Train storage, and the driver writes the logits."""
    exp, jobs, saved = experiment
    unseen = next(iter(jobs))
    (unseen / "best.pt").rename(unseen / "best.pt.away")
    (unseen / "test.parquet").unlink()
    try:
        reinfer(load_experiment(exp), exp, tta=NO_TTA)
    finally:
        (unseen / "best.pt.away").rename(unseen / "best.pt")
    for d, logits in job_logits(jobs).items():
        np.testing.assert_allclose(logits, saved[d], atol=1e-5)


def test_a_failed_fold_model_keeps_the_old_logits_and_says_why(experiment, ray_connected):
    exp, jobs, _ = experiment
    broken = next(iter(jobs))
    before = {d: (d / "test.parquet").read_bytes() for d in jobs} | {exp: (exp / "test.parquet").read_bytes()}
    (broken / "best.pt").rename(broken / "best.pt.away")
    (broken / "best.pt").write_bytes(b"not a state dict")
    before |= {d / "oof.parquet": (d / "oof.parquet").read_bytes() for d in jobs}
    try:
        with pytest.raises(ReinferError, match=f"1 of 2 fold models failed(.|\n)*{broken.name}: InferError: "
                                               "test_convnext fold [01]: .*best.pt does not load"):
            reinfer(load_experiment(exp), exp, tta=FLIP)
    finally:
        (broken / "best.pt.away").replace(broken / "best.pt")
    assert (broken / "test.parquet").read_bytes() == before[broken]  # the failed job's files are untouched
    assert (broken / "oof.parquet").read_bytes() == before[broken / "oof.parquet"]
    assert (exp / "test.parquet").read_bytes() == before[exp]  # and nothing was gathered


def test_tta_flags_need_reinfer(capsys):
    with pytest.raises(SystemExit):
        blend.parse_args(["--tta"])
    assert "only apply with --reinfer" in capsys.readouterr().err


def test_blend_reinfer_with_other_views_rewrites_oof_and_test_and_fits_on_them(experiment, ray_connected, capsys):
    """--tta VIEWS: both logits of every job carry the same TTA, result.json and the gathered
    tables follow, and the blend is fitted on the new OOF logits."""
    exp, jobs, _ = experiment
    before = oof_logits(jobs)
    code = blend.main(["--results", str(exp), "--reinfer", "--tta", "hflip,five_crop", "--set", "blend.rounds=5"])
    out = capsys.readouterr().out
    assert code == 0 and "eval images, TTA hflip x five_crop 0.875 (10 views)\n" in out and out.count("OOF + ") == 2
    spec = load_experiment(exp)
    dataset = load_dataset(spec, verbose=False)
    tta = parse_tta("hflip,five_crop")
    for d, logits in oof_logits(jobs).items():
        r = jobs[d]
        oof, _, _ = read_logits(d / "oof.parquet")
        expected = infer.infer_fold(spec, r.model, r.fold, d / "best.pt", oof["image_key"].tolist(), tta, dataset)
        np.testing.assert_allclose(logits, expected.oof, atol=1e-5)
        np.testing.assert_allclose(read_logits(d / "test.parquet")[1], expected.test, atol=1e-5)
        assert not np.allclose(logits, before[d], atol=1e-3)
        labels = oof["target"].to_numpy(dtype=int)
        assert JobResult.read(d).val == score(labels, logits.argmax(1)).as_dict()
    gathered, gathered_logits, _ = read_logits(exp / "oof.parquet")
    new = np.concatenate([oof_logits(jobs)[d] for d in sorted(jobs, key=lambda d: jobs[d].fold)])
    order = np.argsort(gathered["fold"].to_numpy(), kind="stable")
    np.testing.assert_array_equal(gathered_logits[order], new)
    models = pd.read_csv(exp / "blend" / "models.csv")  # each model's OOF macro F1 alone, as the blend read it
    alone = score(gathered["target"].to_numpy(dtype=int), gathered_logits.argmax(1)).macro_f1
    assert models["oof_macro_f1"].iloc[0] == pytest.approx(alone, abs=1e-4)
