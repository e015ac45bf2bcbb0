"""One search trial on Ray: its jobs (every model on every search fold) queued for the same
slots as a K-fold's jobs (orchestrator.cluster.slots.pool), and its score to Tune once per epoch.

The search keeps a slot per job of its concurrent trials, so a trial's jobs train side by
side, each in a slot process that has already paid Ray Train's start-up. The trial reports epoch t
once every job has reported it (or finished earlier, by patience): its score is the mean over
jobs of each job's best validation macro F1 up to t, which never falls, so ASHA compares
trials at a rung by the best each reached. The last report adds the jobs' OOF macro F1 (the
best epoch's weights, with the model's TTA), the number `orchestrator.run` would show.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from orchestrator.cluster.slots.config import job_config
from tasks.spec.experiment import Experiment
from tasks.spec.load import sampled_spec

SEARCH_QUEUE = "maskfold-search-queue"  # the search's JobQueue actor, by name (a trial finds it)


@dataclass
class TrialScore:
    """A trial's per-epoch score from its jobs' reports, in whatever order they arrive."""

    jobs: tuple[str, ...]
    max_epochs: int  # ASHA's max_t: a report at it ends the trial, so it waits for the jobs' outputs
    best: dict[str, list[float]] = field(default_factory=dict)  # job -> best F1 so far, by epoch
    current: dict[str, list[float]] = field(default_factory=dict)  # job -> that epoch's F1
    oof: dict[str, float] = field(default_factory=dict)  # finished job -> OOF macro F1
    reported: int = 0  # trial epochs reported to Tune

    def add_epoch(self, job: str, epoch: int, best_f1: float, val_f1: float) -> None:
        # A restarted worker reports its epochs again from its checkpoint: keep the first. A job
        # resumed by a resumed search starts after its checkpoint's epoch: the epochs before
        # take its best so far (the best of them, as the job's own checkpoint recorded it).
        seen = len(self.best.get(job, []))
        if epoch > seen:
            self.best.setdefault(job, []).extend([best_f1] * (epoch - seen))
            self.current.setdefault(job, []).extend([val_f1] * (epoch - seen))

    def finish(self, job: str, oof_f1: float, epochs: int) -> None:
        self.oof[job] = oof_f1
        if not self.best.get(job):
            # Restored after it had ended (the search was killed as it finished): Train gives
            # back its outputs but not its epochs, so its OOF score stands for each of them.
            self.best[job] = self.current[job] = [oof_f1] * max(epochs, 1)

    @property
    def complete(self) -> bool:
        return set(self.oof) == set(self.jobs)

    def _at(self, job: str, epoch: int, series: dict[str, list[float]]) -> float | None:
        got = series.get(job, [])
        if epoch <= len(got):
            return got[epoch - 1]
        return got[-1] if job in self.oof and got else None  # stopped early: its last value holds

    def ready(self) -> list[dict]:
        """Reports for the trial epochs that every job has now reached, each once."""
        rows = []
        while True:
            epoch = self.reported + 1
            best = [self._at(j, epoch, self.best) for j in self.jobs]
            if any(b is None for b in best) or epoch > max(len(v) for v in self.best.values()) or (
                    epoch >= self.max_epochs and not self.complete):
                return rows
            current = [self._at(j, epoch, self.current) for j in self.jobs]
            rows.append({"epoch": epoch, "val_macro_f1": sum(best) / len(best),
                         "epoch_macro_f1": sum(current) / len(current)})
            self.reported = epoch

    def last_row(self) -> dict:
        best = [self._at(j, self.reported, self.best) for j in self.jobs]
        current = [self._at(j, self.reported, self.current) for j in self.jobs]
        return {"epoch": self.reported, "val_macro_f1": sum(best) / len(best),
                "epoch_macro_f1": sum(current) / len(current)}

    def final(self) -> dict:
        """Added to the last report: every job finished, with its OOF score."""
        return {"complete": 1, "final": 1, "oof_macro_f1": sum(self.oof.values()) / len(self.oof)}


def trial_jobs(spec: Experiment, folds: list[int], trial_id: str, storage: str) -> list[dict]:
    """The trial's jobs as queue entries: each model on each search fold, named by the trial
    (two trials that sample the same values are still two jobs in Train storage); their
    events come back on the trial's own channel."""
    return [job_config(spec, f"{m.name}-fold{k}-{trial_id}", m.name, k, storage, channel=trial_id)
            for m in spec.models for k in folds]


def search_trial(config: dict) -> None:
    """The Tune function trainable of a search: sample -> spec -> jobs -> per-epoch score."""
    import ray
    from ray import tune

    try:
        spec = sampled_spec(config["base"], config["params"])
    except ValueError as err:
        raise TrialSpecError(str(err)) from None
    trial_id = tune.get_context().get_trial_id()
    jobs = trial_jobs(spec, config["folds"], trial_id, config["storage"])
    score = TrialScore(tuple(j["job_id"] for j in jobs), config["max_epochs"])
    queue = ray.get_actor(SEARCH_QUEUE)
    ray.get(queue.submit.remote(jobs))
    meta = {"epochs": config["max_epochs"], "node": ""}
    while not score.complete:
        events = ray.get(queue.drain.remote(trial_id))
        if not events:
            time.sleep(0.25)
        for event in events:
            _score_event(score, event, meta)
            rows = score.ready()
            if score.complete and not rows:  # every epoch was reported before the last job's outputs
                rows = [score.last_row()]
            for i, row in enumerate(rows):
                last = score.complete and i == len(rows) - 1
                tune.report(row | meta | {"best_f1": row["val_macro_f1"]} | (score.final() if last else {}))


def _score_event(score: TrialScore, event: dict, meta: dict) -> None:
    job_id, kind = event["job_id"], event["kind"]
    if kind in ("failed", "cancelled"):
        raise TrialJobError(f"job {job_id} {kind}:\n{event.get('error', '')}")
    if kind == "final":
        score.finish(job_id, float(event["val_macro_f1"]), int(event.get("epochs", 1)))
    elif kind == "epoch":
        meta["node"] = event.get("node", "")
        score.add_epoch(job_id, int(event["epoch"]), float(event["best_f1"]), float(event["val_macro_f1"]))


class TrialSpecError(ValueError):
    """The sampled values do not make a valid experiment: this trial's error, not the search's."""


class TrialJobError(RuntimeError):
    """One of the trial's jobs failed."""
