"""The GPU paths (fp16 autocast with loss scaling, channels-last, NCCL between two ranks) on a
real CUDA device. No accelerator runs this suite's CI: these are skipped there, and run with
`python -m pytest -m gpu` on a GPU node (e.g. after `ray up cluster.yaml`, on the head).
The same paths run on CPU elsewhere (bf16 autocast in test_job_parts, gloo DDP in test_cluster)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.data.preparation import prepare
from tasks.job import train_job
from tasks.job_io import Job
from tasks.logits import read_logits
from tasks.train.device import select_device
from tests.helpers.specs import shrunk_spec

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_fp16_channels_last_job_trains_and_writes_finite_logits(synth_root, tmp_path):
    spec = shrunk_spec(synth_root, tmp_path, "train.epochs=2", "train.amp=fp16", "train.channels_last=true",
                       name="gpu")
    device = select_device(spec.train)
    assert device.device.type == "cuda" and device.amp_dtype == torch.float16
    result = train_job(spec, Job("test_convnext", 0, tmp_path / "job"), dataset=prepare(spec, verbose=False),
                       log=lambda line: None)
    assert result.device.startswith("cuda") and result.epochs_run == 2
    _, logits, _ = read_logits(result.oof_path)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    assert result.val["macro_f1"] > 0.0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_rank_nccl_job_on_two_gpus(synth_root, tmp_path):
    from orchestrator.cluster.experiment_run import run_experiment
    from tasks.job_io import JobResult

    spec = shrunk_spec(synth_root, tmp_path, "train.epochs=2", "resources.workers_per_job=2", "folds.n_splits=2",
                       name="nccl")
    summary = run_experiment(spec)
    assert summary.failed == () and len(summary.done) == 2
    results = [JobResult.read(p.parent) for p in sorted((tmp_path / "nccl" / "jobs").glob("*/result.json"))]
    assert [r.workers for r in results] == [2, 2] and all(r.device.startswith("cuda") for r in results)
