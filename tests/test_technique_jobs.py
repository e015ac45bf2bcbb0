"""Jobs with train.ema and train.tta, as plain functions (no Ray): the EMA model is what is
validated, checkpointed and saved, a killed job resumes the same EMA, and the OOF and test
logits both carry the model's TTA."""
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.data.preparation import prepare
from tasks.job import train_job
from tasks.job_io import Job
from tasks.logits import read_logits
from tasks.spec.techniques import NO_TTA, resolve_tta
from tasks.train.device import select_device
from tasks.train.inference import eval_loader, normalisation, predict
from tasks.train.model import build_model
from tests.helpers.specs import shrunk_spec

pytestmark = pytest.mark.slow
EPOCHS = 3


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def ema_reference(synth_root, tmp_path_factory):
    results = tmp_path_factory.mktemp("ema")
    spec = shrunk_spec(synth_root, results, "folds.n_splits=3", f"train.epochs={EPOCHS}", f"train.patience={EPOCHS}",
                       "train.ema={decay: 0.9, warmup: true}", "train.grad_accum=2", "train.clip_grad=1.0",
                       name="ematest")
    dataset = prepare(spec, verbose=False)
    result = train_job(spec, Job("test_convnext", 0, results / "job"), dataset=dataset, log=lambda s: None)
    return spec, dataset, result


def test_a_killed_ema_job_resumes_the_same_average(ema_reference, tmp_path):
    spec, dataset, expected = ema_reference
    job = Job("test_convnext", 0, tmp_path / "job")

    def crash_after_1(report):
        if report.epoch == 1:
            raise Crash("killed after epoch 1")

    with pytest.raises(Crash):
        train_job(spec, job, on_epoch=crash_after_1, dataset=dataset, log=lambda s: None)
    blob = torch.load(job.out_dir / "checkpoint.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in blob["ema"].items()}
    assert set(ema) == set(blob["model"])
    moved = [k for k, v in blob["model"].items() if v.is_floating_point() and not torch.allclose(v, ema[k])]
    assert len(moved) > len(ema) // 2  # the average lags the raw weights
    best = blob["state"]["best_weights"]  # after one epoch, that epoch is the best: the EMA's weights
    assert all(torch.equal(best[k], ema[k]) for k in best)
    lines = []
    resumed = train_job(spec, job, dataset=dataset, log=lines.append)
    assert any("resuming after epoch 1" in line for line in lines)
    # An EMA restarted from the raw weights at the resume would give other scores and weights.
    assert resumed.val == expected.val and resumed.best_epoch == expected.best_epoch
    np.testing.assert_allclose(read_logits(resumed.oof_path)[1], read_logits(expected.oof_path)[1], atol=1e-5)
    saved, again = (torch.load(r.weights_path, weights_only=True) for r in (resumed, expected))
    assert all(torch.allclose(saved[k].float(), again[k].float(), atol=1e-6) for k in saved)


def test_the_ema_model_is_what_the_job_saved_and_predicted_with(synth_root, tmp_path):
    """One epoch, so the best epoch is the last: best.pt is the final EMA, not the raw weights."""
    spec = shrunk_spec(synth_root, tmp_path, "folds.n_splits=3", "train.ema.decay=0.9", name="emaone")
    dataset = prepare(spec, verbose=False)
    result = train_job(spec, Job("test_convnext", 2, tmp_path / "job"), dataset=dataset, log=lambda s: None)
    final = torch.load(Path(result.weights_path).parent / "checkpoint.pt", weights_only=True)
    saved = torch.load(result.weights_path, weights_only=True)
    assert all(torch.equal(saved[k], final["ema"]["module." + k]) for k in saved)
    assert any(not torch.allclose(saved[k], final["model"][k]) for k in saved if saved[k].is_floating_point())
    oof, logits, _ = read_logits(result.oof_path)
    model, dev = model_of(spec, saved)
    rows = dataset.train.set_index("image_key").loc[oof["image_key"]].reset_index()
    np.testing.assert_allclose(logits, predict(model, eval_loader(dataset.train_cache, rows, spec.train), dev,
                                               normalisation(model, dev), NO_TTA), atol=1e-5)


def model_of(spec, weights: dict):
    model = build_model(spec.models[0], spec.train)
    model.load_state_dict(weights)
    return model, select_device(spec.train)


def test_oof_and_test_logits_both_carry_the_models_tta(synth_root, tmp_path):
    spec = shrunk_spec(synth_root, tmp_path, "folds.n_splits=3", "train.tta=[hflip, five_crop]",
                       "train.tta_flip=true", name="ttatest")
    dataset = prepare(spec, verbose=False)
    result = train_job(spec, Job("test_convnext", 1, tmp_path / "job"), dataset=dataset, log=lambda s: None)
    tta = resolve_tta(spec.train)
    assert tta.count == 10
    model, dev = model_of(spec, torch.load(result.weights_path, weights_only=True))
    norm = normalisation(model, dev)
    oof, oof_logits, _ = read_logits(result.oof_path)
    rows = dataset.train.set_index("image_key").loc[oof["image_key"]].reset_index()
    for logits, loader in ((oof_logits, eval_loader(dataset.train_cache, rows, spec.train)),
                           (read_logits(result.test_path)[1], eval_loader(dataset.eval_cache, dataset.eval, spec.train))):
        np.testing.assert_allclose(logits, predict(model, loader, dev, norm, tta), atol=1e-5)
        assert not np.allclose(logits, predict(model, loader, dev, norm, NO_TTA), atol=1e-3)
