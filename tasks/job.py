"""One (fold, model) job as a plain function: train, pick the best epoch by validation macro
F1, write OOF and test logits. No Ray here; the orchestrator wraps it.

A refit job (fold REFIT_FOLD, tasks/spec/refit.py) trains on every training person for
`job.epochs` epochs on the folds' schedule, with no validation, and writes test logits only.

Every epoch reseeds from (job seed, epoch), so an epoch is a pure function of the weights
and optimiser state it starts from: a job resumed after epoch k gives the same result as
one that was never interrupted.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tasks.data.batches import CachedImages, Samples, make_loader, sample_weights
from tasks.data.folds import fold_column
from tasks.data.preparation import Dataset, load_dataset, read_folds, rows_hash
from tasks.job_io import (
    EpochBoard,
    EpochReport,
    Job,
    JobResult,
    TrainState,
    job_paths,
    load_checkpoint,
    save_checkpoint,
    save_weights,
    write_job_logits,
    write_metrics,
    write_result,
    write_test_logits,
)
from tasks.labels import TRUE_AGE_BORDERS, age_band, class_of, target_labels
from tasks.metrics import Scores, score_target
from tasks.pseudo.fold_sets import pseudo_path, pseudo_samples, read_pseudo
from tasks.spec.experiment import Experiment, TrainSpec, stable_hash
from tasks.spec.refit import REFIT_FOLD
from tasks.spec.techniques import NO_TTA, resolve_tta
from tasks.tracking import Tracker, epoch_metrics, final_metrics, job_tracking
from tasks.train.device import select_device
from tasks.train.distributed import Ranks, current_ranks, sum_over_ranks, sync_buffers, wrap_model
from tasks.train.inference import ModelContext, model_context, predict_rows
from tasks.train.loop import EpochStats, Fitting, eval_loss, make_ema, optimizer_steps, train_epoch
from tasks.train.losses import class_weights
from tasks.train.model import build_model
from tasks.train.tta import check_view_sizes


def job_seed(spec: Experiment, job: Job) -> int:
    base = spec.seed if job.seed is None else job.seed
    # A repeat's models start from other weights too, as the eval photos' fold models differ.
    return int(stable_hash([base, job.fold, job.model, *([job.repeat] if job.repeat else [])]), 16) % 2**31


def split_fold(dataset: Dataset, spec: Experiment, fold: int, train: TrainSpec, repeat: int = 0):
    """Training rows (with training-only band borders and drops) and validation rows of a
    fold of a repeat (`folds.repeats`); REFIT_FOLD: every person trains, none validates."""
    folds = read_folds(spec, dataset)
    column = fold_column(repeat)
    if column not in folds:
        raise ValueError(f"{spec.out_dir / 'folds.parquet'} has no repeat {repeat}; run prepare again")
    folds = folds[["image_key", column]].rename(columns={column: "fold"})
    rows = dataset.train.merge(folds, on="image_key", how="left", validate="one_to_one")
    if rows["fold"].isna().any():
        raise ValueError(f"{spec.out_dir / 'folds.parquet'} lacks some images; run prepare again")
    if not 0 <= fold < spec.folds.n_splits and fold != REFIT_FOLD:
        raise ValueError(f"fold {fold} is outside 0..{spec.folds.n_splits - 1}")
    val = rows[rows["fold"] == fold].reset_index(drop=True)
    fit = rows[rows["fold"] != fold].copy()  # REFIT_FOLD is no fold: every row
    margin = train.drop_age_margin
    if margin:
        near = np.zeros(len(fit), dtype=bool)
        for border in TRUE_AGE_BORDERS:
            near |= (fit["age"] >= border - margin).to_numpy() & (fit["age"] < border).to_numpy()
        fit = fit[~near]
    fit["train_label"] = class_of(fit["mask"], fit["gender"], age_band(fit["age"], train.age_borders))
    return fit.reset_index(drop=True), val


def make_scheduler(optimizer, train: TrainSpec, updates: int):
    from timm.scheduler import create_scheduler_v2

    s, lr = train.scheduler, train.optimizer.lr
    if s.name == "none":
        return None
    kwargs = dict(num_epochs=train.epochs, warmup_epochs=s.warmup_epochs, warmup_lr=s.warmup_lr,
                  min_lr=s.min_lr, decay_epochs=s.decay_epochs, decay_rate=s.decay_rate,
                  patience_epochs=s.patience_epochs, step_on_epochs=s.name == "plateau",
                  updates_per_epoch=updates)
    if s.name == "cyclic":
        kwargs.update(num_epochs=max(1, train.epochs // s.cycles), cycle_limit=s.cycles)
    if s.name == "onecycle":  # OneCycleLR's shape: 30% warm-up from lr/25, then anneal to lr/1e4
        kwargs.update(warmup_epochs=max(1, round(0.3 * train.epochs)), warmup_lr=lr / 25, min_lr=lr / 1e4,
                      warmup_prefix=True)
    name = "cosine" if s.name in ("cyclic", "onecycle") else s.name
    scheduler, _ = create_scheduler_v2(optimizer, sched=name, **kwargs)
    return scheduler


def train_job(spec: Experiment, job: Job, on_epoch: Callable[[EpochReport], None] | None = None,
              dataset: Dataset | None = None, log=print) -> JobResult:
    """Train one (fold, model) job. Under a process group of several ranks (see
    tasks.train.distributed) every rank must call this; rank 0 alone writes files and tracks."""
    started = time.monotonic()
    ranks = current_ranks()
    with job_tracking(spec, job, job_seed(spec, job), ranks.leader, log) as tracker:
        result = _train(spec, job, ranks, tracker, on_epoch, dataset, log, started)
        tracker.summary(final_metrics(result))
    return result


def _train(spec: Experiment, job: Job, ranks: Ranks, tracker: Tracker, on_epoch, dataset: Dataset | None, log,
           started: float) -> JobResult:
    dataset = dataset or load_dataset(spec, verbose=False)
    model_spec = spec.model(job.model)
    train, stop = job_schedule(spec.train_for(model_spec), job)
    seed = job_seed(spec, job)
    fit_rows, val_rows = split_fold(dataset, spec, job.fold, train, job.repeat)
    samples = fit_samples(spec, job, dataset, fit_rows, log)
    torch.manual_seed(seed)
    model = build_model(model_spec, train)
    dev = select_device(train)
    dev.place(model)
    check_view_sizes(model, resolve_tta(train), train.input_size, dev.device)
    ctx = model_context(model, dev, train, ranks)
    make_fit = lambda e: _fit_loader(samples, train, seed * 1000 + e, ranks)  # noqa: E731
    fit, state = _start_fitting(ctx, job, fit_rows, optimizer_steps(len(make_fit(0)), train.grad_accum), log)
    judged = fit.judged  # the EMA model when train.ema is set
    board = EpochBoard(job.out_dir, state.epoch) if ranks.leader else None
    for epoch in range(state.epoch, stop):
        if state.stale >= train.patience:  # a refit job never goes stale: it has no validation
            break
        epoch_seed = seed * 1000 + epoch + 7919 * ranks.rank  # ranks drop out and mix differently
        torch.manual_seed(epoch_seed)
        stats = _over_ranks(train_epoch(fit, make_fit(epoch), epoch, torch.Generator().manual_seed(epoch_seed)),
                            ranks)
        sync_buffers(model, ranks)
        if fit.ema is not None:  # each rank's EMA averaged its own batch statistics
            sync_buffers(judged.model, ranks)
        val, val_loss = _validate(judged, dataset, val_rows, train)
        if fit.scheduler is not None:
            fit.scheduler.step(epoch + 1, val.macro_f1)
        state = state.after_epoch(epoch + 1, val.macro_f1, judged.model) if len(val_rows) else \
            state.after_unvalidated_epoch(epoch + 1, judged.model)
        report = EpochReport(epoch + 1, stop, stats.loss, stats.accuracy, val_loss,
                             val, fit.optimizer.param_groups[0]["lr"], stats.seconds, state.best_f1,
                             state.best_epoch, stats.images / max(stats.seconds, 1e-9), train.target)
        state = replace(state, history=(*state.history, report.row()))
        if ranks.leader:
            write_metrics(job.out_dir, state.history)
            board.log(report.row())
            save_checkpoint(job.out_dir, model, fit.optimizer, fit.scheduler, fit.scaler, state, fit.ema)
            # after the checkpoint: a job resumed from it never logs an epoch twice
            tracker.metrics(epoch_metrics(report.row()), report.epoch)
        log(report.line(job.key))
        if on_epoch is not None:
            on_epoch(report)
    if board is not None:
        board.close()
    return _finish(spec, job, dataset, judged, val_rows, state, started, len(samples.rows) - len(fit_rows))


def job_schedule(train: TrainSpec, job: Job) -> tuple[TrainSpec, int]:
    """The train settings a job's schedule is built from, and the epoch it stops after. A refit
    job (`job.epochs`) follows the folds' schedule and stops at its epoch count; past the
    folds' last epoch, the schedule is stretched to reach it."""
    if job.epochs is None:
        return train, train.epochs
    return train.model_copy(update={"epochs": max(train.epochs, job.epochs)}), job.epochs


NO_SCORES = Scores(*(float("nan"),) * 5)  # a refit job's: it holds no one out


def _validate(ctx: ModelContext, dataset: Dataset, val_rows, train: TrainSpec) -> tuple[Scores, float]:
    """Scores and loss on the validation rows; NaN with none (a refit job)."""
    if not len(val_rows):
        return NO_SCORES, float("nan")
    logits = predict_rows(ctx, dataset.train_cache, val_rows, NO_TTA)
    # a specialist (train.target) is scored, and its best epoch chosen, on its attribute alone
    labels = target_labels(val_rows["label"].to_numpy(), train.target)
    return score_target(val_rows["label"].to_numpy(), logits, train.target), eval_loss(logits, labels)


def _start_fitting(ctx: ModelContext, job: Job, fit_rows, updates: int, log) -> tuple[Fitting, TrainState]:
    """Optimiser, schedule, scaler and EMA, restored from the job's checkpoint if it has one."""
    from timm.optim import create_optimizer_v2

    o, model = ctx.train.optimizer, ctx.model
    optimizer = create_optimizer_v2(model, opt=o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)
    scheduler = make_scheduler(optimizer, ctx.train, updates)
    scaler = ctx.device.scaler()
    ema = make_ema(model, ctx.train)
    state = load_checkpoint(job.out_dir, model, optimizer, scheduler, scaler, ema)
    if state.epoch:
        log(f"[{job.key}] resuming after epoch {state.epoch} (best F1 {state.best_f1:.4f} at {state.best_epoch})")
    net = wrap_model(model, ctx.device.device, ctx.ranks)  # after loading: DDP starts from rank 0's weights
    labels = torch.tensor(fit_rows["train_label"].to_numpy())
    weights = {k: v.to(ctx.device.device) for k, v in class_weights(labels).items()}
    return Fitting(ctx, net, optimizer, scheduler, scaler, weights, ema), state


def _finish(spec: Experiment, job: Job, dataset: Dataset, ctx: ModelContext, val_rows, state: TrainState,
            started: float, pseudo_images: int) -> JobResult:
    """The best epoch's weights (of the EMA model when on): OOF and test logits with the model's
    TTA, best.pt, then result.json last."""
    model, train, ranks = ctx.model, ctx.train, ctx.ranks
    model.load_state_dict(state.best_weights)
    tta = resolve_tta(train)
    test = predict_rows(ctx, dataset.eval_cache, dataset.eval, tta)
    if not len(val_rows):  # a refit job: test logits only
        if ranks.leader:
            write_test_logits(job, spec, dataset.eval, test, rows_hash(spec, dataset))
            save_weights(job.out_dir, model)
        val, val_loss = NO_SCORES, float("nan")
    else:
        oof = predict_rows(ctx, dataset.train_cache, val_rows, tta)
        if ranks.leader:
            write_job_logits(job, spec, val_rows, oof, dataset.eval, test, rows_hash(spec, dataset))
            save_weights(job.out_dir, model)
        val = score_target(val_rows["label"].to_numpy(), oof, train.target)
        val_loss = eval_loss(oof, target_labels(val_rows["label"].to_numpy(), train.target))
    result = JobResult(
        experiment=spec.name, model=job.model, backbone=spec.model(job.model).backbone, fold=job.fold, repeat=job.repeat,
        seed=job_seed(spec, job), best_epoch=state.best_epoch, epochs_run=state.epoch,
        stopped_early=state.epoch < job_schedule(train, job)[1], val=val.as_dict(), val_loss=val_loss,
        train_images=int(state.history[-1]["train_images"]) if state.history else 0,
        val_images=len(val_rows), test_images=len(dataset.eval), device=str(ctx.device.device),
        seconds=time.monotonic() - started, workers=ranks.world, pseudo_images=pseudo_images, finished=time.time(),
        target=train.target, **job_paths(job.out_dir))
    if ranks.leader:
        write_result(job.out_dir, result)
    return result


def _over_ranks(stats: EpochStats, ranks: Ranks) -> EpochStats:
    """One epoch's loss, accuracy and image count over all ranks."""
    loss, correct, images, seconds = sum_over_ranks(
        [stats.loss * stats.images, stats.accuracy * stats.images, stats.images, stats.seconds], ranks)
    return EpochStats(loss / max(images, 1), correct / max(images, 1), int(images), seconds / ranks.world)


def fit_samples(spec: Experiment, job: Job, dataset: Dataset, fit_rows, log=print) -> Samples:
    """The fold's training photos, plus its pseudo-labelled eval photos when the spec has `pseudo:`.
    Pseudo rows only ever train: validation and OOF rows are training people's photos."""
    labelled = Samples.of(dataset.train_cache, fit_rows["image_key"], fit_rows["train_label"].to_numpy(),
                          fit_rows["age"].to_numpy())
    if spec.pseudo is None:
        return labelled
    rows = job.pseudo if job.pseudo is not None else read_pseudo(pseudo_path(spec.out_dir, job.fold))
    extra = pseudo_samples(rows, spec.pseudo, dataset.eval_cache)
    log(f"[{job.key}] training on {len(fit_rows)} labelled photos + {len(extra.rows)} pseudo-labelled eval photos "
        f"({'soft' if spec.pseudo.soft else 'hard'} labels, weight {spec.pseudo.weight:g})")
    return labelled.plus(extra)


def _fit_loader(samples: Samples, train: TrainSpec, seed: int, ranks: Ranks):
    data = CachedImages(samples, train.augment.train, train.input_size)
    labels = samples.labels
    # class = mask*6 + gender*3 + band: the band of any row, pseudo ones included, is label % 3
    weights = sample_weights(labels, labels % 3, train.sampler)
    return make_loader(data, train.batch_size, train.loader_workers, shuffle=True, sample_weights=weights,
                       seed=seed, ranks=ranks)


def main(argv: list[str] | None = None) -> int:
    """`python -m tasks.job SPEC MODEL FOLD OUT_DIR`: run one job by hand, no Ray."""
    from tasks.spec.load import load_spec

    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 4:
        print(main.__doc__, file=sys.stderr)
        return 2
    spec = load_spec(args[0])
    result = train_job(spec, Job(args[1], int(args[2]), Path(args[3])))
    print(f"{result.model} fold {result.fold}: val macro F1 {result.val['macro_f1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
