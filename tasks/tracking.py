"""Experiment tracking on W&B and/or MLflow: one run per job, per leaderboard, per blend.

Tracking observes and never decides: every backend call is guarded, so a missing package,
an unreachable server or any backend error prints one warning naming the backend, turns
that backend off for the rest of the run, and training goes on. With no `tracking:`
section nothing is opened and neither package is imported.

Logged from the process that owns the result (rank 0 of a job, the driver for the
leaderboard and the blend), not through Tune logger callbacks: Ray Train V2's RunConfig
rejects those (ray issue 64179), and the job knows its own epochs best.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.spec.tracking import MlflowSpec, TrackingSpec, WandbSpec

# Tag holding the run's stable key: a resumed job finds its MLflow run by it.
KEY_TAG = "maskfold.run_key"


@dataclass(frozen=True)
class RunInfo:
    """What names a tracking run and where its local files go."""

    name: str  # shown in the UI: the job id, <name>-leaderboard, <name>-blend
    kind: str  # job, leaderboard or blend (W&B job_type)
    tags: dict[str, str]
    local_dir: Path  # W&B's run files go under local_dir/wandb unless WANDB_DIR is set
    # Same key, same run: a job resumed after a crash continues its run. None: always a new run.
    resume_key: str | None = None


class Tracker:
    """The open runs of one RunInfo, one per configured backend; every call is safe."""

    def __init__(self, backends: list, warn: Callable[[str], None]):
        self._backends = backends
        self._warn = warn

    @property
    def active(self) -> bool:
        return bool(self._backends)

    def params(self, values: dict) -> None:
        self._each("log parameters", lambda b: b.params(values))

    def metrics(self, values: dict[str, float], step: int) -> None:
        self._each("log metrics", lambda b: b.metrics(values, step))

    def summary(self, values: dict[str, float]) -> None:
        self._each("log final metrics", lambda b: b.summary(values))

    def table(self, name: str, frame) -> None:
        """A pandas DataFrame as a table (W&B Table; MLflow: <name>.json table and <name>.csv)."""
        self._each(f"log the table {name}", lambda b: b.table(name, frame))

    def close(self, failed: bool = False) -> None:
        self._each("finish the run", lambda b: b.finish(failed))
        self._backends = []

    def _each(self, what: str, call: Callable) -> None:
        for backend in list(self._backends):
            if not guarded(backend, what, lambda b=backend: call(b), self._warn):
                self._backends.remove(backend)


def guarded(backend, what: str, call: Callable[[], object], warn: Callable[[str], None]) -> bool:
    """Run `call()`; False after one warning naming the backend if it raised anything."""
    try:
        call()
        return True
    except Exception as err:  # tracking never fails a job, whatever the backend raises
        warn(f"WARNING tracking: {backend.label} could not {what} ({type(err).__name__}: {_first_line(err)}); "
             f"{backend.label} is off for this run and the job goes on. {backend.hint}")
        return False


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def tracking_run(spec: TrackingSpec, run: RunInfo, warn: Callable[[str], None] = _stderr) -> Iterator[Tracker]:
    """A Tracker for `run` on every backend `spec` configures (none: a Tracker that does
    nothing). The runs are finished on exit, marked failed if the block raised."""
    tracker = open_tracker(spec, run, warn)
    try:
        yield tracker
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close()


def open_tracker(spec: TrackingSpec, run: RunInfo, warn: Callable[[str], None] = _stderr) -> Tracker:
    opened: list = []
    for backend, section in ((_Wandb, spec.wandb), (_Mlflow, spec.mlflow)):
        if section is not None:
            guarded(backend, "start a run", lambda b=backend, s=section: opened.append(b(s, run)), warn)
    return Tracker(opened, warn)


NO_TRACKING = Tracker([], _stderr)


def flat_params(tree: dict, prefix: str = "") -> dict[str, object]:
    """Nested settings as dotted keys (optimizer.lr); lists stay whole, as their text."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


class _Wandb:
    label = "W&B"
    hint = ("Check `wandb login` and the network, or set tracking.wandb.mode=offline and `wandb sync` "
            "the run folder later.")

    def __init__(self, spec: WandbSpec, run: RunInfo):
        import wandb  # lazy: the package is needed only when W&B is configured

        self._wandb = wandb
        root = Path(os.environ.get("WANDB_DIR") or run.local_dir)
        root.mkdir(parents=True, exist_ok=True)
        # wandb otherwise writes its cache and staging files into the home folder
        os.environ.setdefault("WANDB_CACHE_DIR", str(root / "wandb" / ".cache"))
        os.environ.setdefault("WANDB_DATA_DIR", str(root / "wandb" / ".data"))
        settings = wandb.Settings(console="off", silent=True, quiet=True, x_disable_stats=True, save_code=False,
                                  disable_git=True,  # results folders are not repositories: no warning
                                  symlink=False,  # the folder travels in job checkpoints: no links in it
                                  init_timeout=spec.init_timeout_s)
        self._stepped = False
        self._run = wandb.init(
            project=spec.project, entity=spec.entity, group=spec.group, job_type=run.kind, name=run.name,
            tags=[f"{k}:{v}"[:64] for k, v in run.tags.items()], dir=str(root), mode=spec.mode,
            id=_wandb_id(run.resume_key) if run.resume_key else None,
            resume="allow" if run.resume_key else None, settings=settings, reinit="create_new")
        self._run.config.update(run.tags, allow_val_change=True)

    def params(self, values: dict) -> None:
        self._run.config.update(values, allow_val_change=True)

    def metrics(self, values: dict[str, float], step: int) -> None:
        if not self._stepped:  # epochs, not W&B's own call counter: a resumed run continues its x-axis
            self._run.define_metric("epoch")
            self._run.define_metric("*", step_metric="epoch")
            self._stepped = True
        self._run.log({"epoch": step, **values})

    def summary(self, values: dict[str, float]) -> None:
        self._run.summary.update(values)

    def table(self, name: str, frame) -> None:
        self._run.log({name: self._wandb.Table(dataframe=frame.reset_index(drop=True))})

    def finish(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


def _wandb_id(key: str) -> str:
    from tasks.spec.experiment import stable_hash  # W&B ids allow no '/': a hash of the key

    return stable_hash(key)


class _Mlflow:
    label = "MLflow"
    hint = "Check tracking.mlflow.tracking_uri (is the server up and reachable from this node?)."

    def __init__(self, spec: MlflowSpec, run: RunInfo):
        uri = spec.tracking_uri or f"file:{run.local_dir / 'mlruns'}"
        _mlflow_environment(spec, uri)
        from mlflow.tracking import MlflowClient  # lazy: needed only when MLflow is configured

        self._client = MlflowClient(tracking_uri=uri)
        experiment = _experiment_id(self._client, spec.experiment or "maskfold")
        tags = {**run.tags, "kind": run.kind}
        found = self._client.search_runs([experiment], filter_string=f"tags.`{KEY_TAG}` = '{run.resume_key}'",
                                         max_results=1) if run.resume_key else []
        if found:
            self.run_id = found[0].info.run_id
            self._client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self._client.create_run(
                experiment, run_name=run.name, tags={**tags, **({KEY_TAG: run.resume_key} if run.resume_key else {})}
            ).info.run_id

    def params(self, values: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k[:250], str(v)[:6000]) for k, v in values.items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 parameters
            self._client.log_batch(self.run_id, params=params[i:i + 100])

    def metrics(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def summary(self, values: dict[str, float]) -> None:
        self.metrics(values, 0)

    def table(self, name: str, frame) -> None:
        self._client.log_table(self.run_id, data=frame, artifact_file=f"{name}.json")
        self._client.log_text(self.run_id, frame.to_csv(index=False), f"{name}.csv")

    def finish(self, failed: bool) -> None:
        self._client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _mlflow_environment(spec: MlflowSpec, uri: str) -> None:
    # MLflow reads these per request; its defaults retry a dead server for about 4 minutes.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(spec.request_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(spec.request_timeout_s)
    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless asked: it works, with no server or database.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another job created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# Per-epoch metric names, fixed for every job: metrics.csv columns, except seconds.
EPOCH_METRICS = {"train_loss": "train_loss", "train_accuracy": "train_accuracy", "val_loss": "val_loss",
                 "val_macro_f1": "val_macro_f1", "val_accuracy": "val_accuracy", "val_mask_f1": "val_mask_f1",
                 "val_gender_f1": "val_gender_f1", "val_age_f1": "val_age_f1", "lr": "lr",
                 "images_per_second": "images_per_second", "seconds": "epoch_seconds"}


@contextmanager
def job_tracking(spec, job, seed: int, leader: bool, log: Callable[[str], None]) -> Iterator[Tracker]:
    """The job's run on the leader rank (named by the job id, resumed by it, with its resolved
    hyperparameters); elsewhere, or with no `tracking:`, a Tracker that does nothing."""
    if not (leader and spec.tracking.enabled):
        yield NO_TRACKING
        return
    model = spec.model(job.model)
    tags = {"experiment": spec.name, "model": job.model, "backbone": model.backbone, "fold": str(job.fold),
            "job_id": job.id}
    run = RunInfo(job.id, "job", tags, job.out_dir, resume_key=f"{spec.name}/{job.id}")
    with tracking_run(spec.tracking.resolved(spec.name, spec.out_dir.resolve()), run, log) as tracker:
        tracker.params({**flat_params(spec.train_for(model).model_dump(mode="json")), "backbone": model.backbone,
                        "pretrained": model.pretrained, "seed": seed, "fold": job.fold})
        yield tracker


def epoch_metrics(row: dict) -> dict[str, float]:
    """One EpochReport.row() under the fixed tracking names."""
    return {name: float(row[column]) for column, name in EPOCH_METRICS.items()}


def final_metrics(result) -> dict[str, float]:
    """A JobResult's scores: final_macro_f1 is result.json's val.macro_f1 (best epoch, with TTA)."""
    return {**{f"final_{k}": float(v) for k, v in result.val.items()}, "final_val_loss": result.val_loss,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "job_seconds": result.seconds}
