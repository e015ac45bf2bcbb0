"""One (fold, model) job as a plain function: it learns, writes valid logits, resumes exactly,
and shows the leakage trap of image-level splits."""
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from tasks.data.folds import save_folds
from tasks.data.preparation import folds_meta, prepare
from tasks.job import train_job
from tasks.job_io import Job, JobResult
from tasks.logits import LOGITS_SCHEMA, read_logits
from tasks.metrics import score
from tests.helpers.specs import shrunk_spec

EPOCHS = 10
pytestmark = pytest.mark.slow


class Crash(RuntimeError):
    pass


def job_spec(root: Path, results: Path, *overrides: str):
    return shrunk_spec(root, results, "folds.n_splits=3", f"train.epochs={EPOCHS}", f"train.patience={EPOCHS}",
                       "train.batch_size=16", *overrides, name="jobtest")


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory):
    """An uninterrupted person-level job: the baseline several tests compare against."""
    results = tmp_path_factory.mktemp("results")
    spec = job_spec(synth_root, results)
    dataset = prepare(spec, verbose=False)
    result = train_job(spec, Job("test_convnext", 0, results / "job"), dataset=dataset, log=lambda s: None)
    return spec, dataset, result


def test_job_learns_far_above_chance(reference):
    spec, dataset, result = reference
    oof, logits, _ = read_logits(result.oof_path)
    labels = oof["target"].to_numpy(dtype=int)
    constant = score(labels, np.full_like(labels, np.bincount(labels).argmax()))
    assert result.val["macro_f1"] > 0.12  # 18 classes: chance is about 0.05
    assert result.val["macro_f1"] > 3 * constant.macro_f1
    assert result.val["mask_f1"] > 0.5  # the drawn mask is the easiest cue
    history = pd.read_csv(result.metrics_path)
    assert len(history) == EPOCHS and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert result.best_epoch == int(history["val_macro_f1"].idxmax()) + 1  # best by F1, not accuracy


def test_logits_follow_the_schema_and_cover_the_fold(reference):
    spec, dataset, result = reference
    folds = pd.read_parquet(spec.out_dir / "folds.parquet")
    held_out = set(folds.loc[folds["fold"] == 0, "image_key"])
    oof_table = pq.read_table(result.oof_path)
    assert oof_table.schema.equals(LOGITS_SCHEMA, check_metadata=False)
    oof, logits, meta = read_logits(result.oof_path)
    assert oof["image_key"].is_unique and set(oof["image_key"]) == held_out
    assert logits.shape == (len(held_out), 18) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert (oof["split"] == "oof").all() and (oof["fold"] == 0).all()
    truth = dataset.train.set_index("image_key").loc[oof["image_key"], "label"].to_numpy()
    assert np.array_equal(oof["target"].to_numpy(dtype=int), truth)
    test, test_logits, test_meta = read_logits(result.test_path)
    assert list(test["image_key"]) == list(dataset.eval["image_key"])  # info.csv order
    assert test["target"].isna().all() and test_logits.shape == (len(dataset.eval), 18)
    assert meta.rows_hash == test_meta.rows_hash and meta.num_classes == 18
    assert JobResult.read(Path(result.oof_path).parent) == result
    assert result.finished > Path(result.oof_path).stat().st_mtime - 1  # when it ended, for the report's dates


def test_resume_after_a_crash_gives_the_same_result(reference, tmp_path):
    spec, dataset, expected = reference
    job = Job("test_convnext", 0, tmp_path / "job")

    def crash_after_3(report):
        if report.epoch == 3:
            raise Crash("killed after epoch 3")

    with pytest.raises(Crash):
        train_job(spec, job, on_epoch=crash_after_3, dataset=dataset, log=lambda s: None)
    assert not (job.out_dir / "result.json").exists()
    lines = []
    resumed = train_job(spec, job, dataset=dataset, log=lines.append)
    assert any("resuming after epoch 3" in line for line in lines)
    assert sum("epoch" in line and "/10" in line for line in lines) == EPOCHS - 3
    assert resumed.val == expected.val and resumed.best_epoch == expected.best_epoch
    _, a, _ = read_logits(resumed.oof_path)
    _, b, _ = read_logits(expected.oof_path)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    weights = torch.load(resumed.weights_path, weights_only=True)
    assert set(weights) == set(torch.load(expected.weights_path, weights_only=True))
    # The resumed job's TensorBoard curve continues where it stopped: every epoch once, as if
    # it had never been interrupted.
    resumed_curve, expected_curve = (tb_scalars(Path(r.oof_path).parent / "tb", "val/macro_f1")
                                     for r in (resumed, expected))
    assert [step for step, _ in resumed_curve] == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose([v for _, v in resumed_curve], [v for _, v in expected_curve], atol=1e-6)


def tb_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_holds_every_metrics_column_from_one_writer(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tasks.job_io import tensorboard_tag

    _, _, result = reference
    job_dir = Path(result.oof_path).parent
    metrics = pd.read_csv(job_dir / "metrics.csv")
    assert len(list((job_dir / "tb").glob("events.out.tfevents.*"))) == 1  # one writer for the job's life
    events = EventAccumulator(str(job_dir / "tb"))
    events.Reload()
    expected = {tensorboard_tag(c) for c in metrics.columns if c not in ("epoch", "epochs")}
    assert {"val/macro_f1", "val/loss", "train/loss", "train/lr", "val/gender_f1", "train/images_per_second"} <= expected
    assert set(events.Tags()["scalars"]) == expected
    logged = [v for _, v in tb_scalars(job_dir / "tb", "val/macro_f1")]
    np.testing.assert_allclose(logged, metrics["val_macro_f1"], atol=1e-6)


def test_image_level_split_leaks(reference, tmp_path):
    """Same job, folds that split images instead of people: validation flatters."""
    spec, dataset, honest = reference
    leaky_spec = job_spec(spec.data.root, tmp_path, "name=leaky")
    rng = np.random.default_rng(0)
    folds = pd.DataFrame({"image_key": dataset.train["image_key"], "person": dataset.train["person"],
                          "stratum": 0, "fold": rng.integers(0, spec.folds.n_splits, len(dataset.train))})
    prepare(leaky_spec, verbose=False)
    save_folds(leaky_spec.out_dir / "folds.parquet", folds, folds_meta(leaky_spec, dataset))
    leaky = train_job(leaky_spec, Job("test_convnext", 0, tmp_path / "job"), dataset=dataset, log=lambda s: None)
    # Gender and age belong to the person: seen people are recognised by their backdrop.
    assert leaky.val["gender_f1"] > honest.val["gender_f1"] + 0.1
    assert leaky.val["age_f1"] > honest.val["age_f1"] + 0.1
    assert leaky.val["accuracy"] > honest.val["accuracy"] + 0.1
    assert leaky.val["macro_f1"] > honest.val["macro_f1"]
