"""Data-parallel jobs: the epoch sampler's shares, and train_job on two gloo ranks (no Ray)."""
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.data.preparation import prepare
from tasks.job import train_job
from tasks.job_io import Job, JobResult
from tasks.logits import read_logits
from tasks.spec.techniques import FLIP
from tasks.train.device import select_device
from tasks.train.distributed import EpochSampler, Ranks
from tasks.train.inference import eval_loader, normalisation, predict
from tasks.train.model import build_model
from tests.helpers.specs import shrunk_spec


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("size,world", [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_ranks_share_one_draw_equally(size, world, weighted):
    weights = np.linspace(1, 3, size) if weighted else None
    shares = [list(EpochSampler(size, weights, seed=5, ranks=Ranks(r, world))) for r in range(world)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(EpochSampler(size, weights, 5, Ranks(0, world)))
    whole = list(EpochSampler(size, weights, seed=5, ranks=Ranks()))
    dealt = [shares[i % world][i // world] for i in range(len(shares[0]) * world)]
    assert dealt[:size] == whole  # round-robin deal of the single-process draw, then padding
    if not weighted:
        assert sorted(whole) == list(range(size))
        assert set(dealt) == set(range(size))
    assert whole != list(EpochSampler(size, weights, seed=6, ranks=Ranks())) or size < 3


# With EMA, accumulation (no_sync between steps) and clipping on, the ranks must still agree
# (without them the same code takes the plain branches; one spawn of two ranks costs ~40 s).
TECHNIQUES = ("train.ema={decay: 0.9, warmup: true}", "train.grad_accum=2", "train.clip_grad=1.0")


def _spec(root: Path, results: Path, *overrides: str):
    return shrunk_spec(root, results, "folds.n_splits=3", "train.epochs=3", "train.patience=3",
                       "train.batch_size=8", "train.tta_flip=true", *overrides, name="ddptest")


def _rank_main(rank: int, world: int, port: int, root: str, results: str, outs: str, overrides: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        spec = _spec(Path(root), Path(results), *overrides)
        out_dir = Path(outs) / f"rank{rank}"
        result = train_job(spec, Job("test_convnext", 1, out_dir), log=lambda s: None)
        (Path(outs) / f"result{rank}.json").write_text(json.dumps(
            {"f1": result.val["macro_f1"], "best_epoch": result.best_epoch, "workers": result.workers}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_job_agrees_and_writes_once(synth_root, tmp_path):
    spec = _spec(synth_root, tmp_path / "results", *TECHNIQUES)
    dataset = prepare(spec, verbose=False)
    mp.spawn(_rank_main, args=(2, _free_port(), str(synth_root), str(tmp_path / "results"), str(tmp_path), TECHNIQUES),
             nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["workers"] == 2  # same F1, same early-stopping state
    assert not (tmp_path / "rank1").exists()  # rank 0 alone writes
    result = JobResult.read(tmp_path / "rank0")
    assert result.workers == 2 and result.val["macro_f1"] == pytest.approx(ranks[0]["f1"])
    history = pd.read_csv(tmp_path / "rank0" / "metrics.csv")
    assert len(history) == 3
    fit_images = len(dataset.train) - result.val_images
    # Both ranks' shares make one epoch: at most one dropped short batch per rank.
    assert fit_images - 2 * 8 < history["train_images"].round().iloc[-1] <= fit_images + 1
    # Gathered logits are in row order: they equal a single process predicting with best.pt.
    oof, logits, _ = read_logits(result.oof_path)
    model = build_model(spec.models[0], spec.train)
    model.load_state_dict(torch.load(result.weights_path, weights_only=True))
    dev = select_device(spec.train)
    val_rows = dataset.train.set_index("image_key").loc[oof["image_key"]].reset_index()
    again = predict(model, eval_loader(dataset.train_cache, val_rows, spec.train), dev,
                    normalisation(model, dev), FLIP)
    np.testing.assert_allclose(logits, again, atol=1e-4)
    test, test_logits, _ = read_logits(result.test_path)
    assert list(test["image_key"]) == list(dataset.eval["image_key"])
    eval_again = predict(model, eval_loader(dataset.eval_cache, dataset.eval, spec.train), dev,
                         normalisation(model, dev), FLIP)
    np.testing.assert_allclose(test_logits, eval_again, atol=1e-4)
