"""The spec's `tracking:` section: where jobs, the run's leaderboard and the blend are logged.

Both backends are optional and off by default. Tracking is an observer: it is kept out of
every hash, so turning it on or off never reruns a job or changes a job id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    # tasks.spec.experiment.Strict, repeated: tasks.spec.experiment imports this module.
    model_config = ConfigDict(extra="forbid", frozen=True)


class WandbSpec(_Strict):
    project: str = Field(min_length=1)
    entity: str | None = None  # team or user; default: the logged-in account's
    group: str | None = None  # default: the experiment's name
    # offline by default: no account or network needed while training; `wandb sync` uploads later.
    mode: Literal["offline", "online"] = "offline"
    # Online: how long opening a run may wait for the server before tracking gives up on it.
    init_timeout_s: float = Field(30.0, gt=0)


class MlflowSpec(_Strict):
    # Default: a file store in results/<name>/mlruns. Any MLflow URI works (http(s)://, databricks).
    tracking_uri: str | None = None
    experiment: str | None = None  # default: the experiment's name
    # MLflow's own defaults wait about 4 minutes on a dead server before failing; tracking
    # must not hold a job that long.
    request_timeout_s: int = Field(10, ge=1)
    request_retries: int = Field(2, ge=0, le=10)

    @field_validator("tracking_uri")
    @classmethod
    def _has_scheme(cls, v: str | None) -> str | None:
        if v is not None and ":" not in v:
            raise ValueError(f"{v!r} is not a URI: use file:/path/to/mlruns, http(s)://host:port or databricks")
        return v


class TrackingSpec(_Strict):
    wandb: WandbSpec | None = None
    mlflow: MlflowSpec | None = None

    @property
    def enabled(self) -> bool:
        return self.wandb is not None or self.mlflow is not None

    def resolved(self, experiment: str, out_dir: Path) -> TrackingSpec:
        """Defaults filled in and file stores made absolute (`out_dir` = results/<name>), so a
        worker in another folder logs to the same place."""
        wandb = self.wandb and self.wandb.model_copy(update={"group": self.wandb.group or experiment})
        mlflow = self.mlflow and self.mlflow.model_copy(update={
            "tracking_uri": _absolute_file_uri(self.mlflow.tracking_uri or f"file:{out_dir / 'mlruns'}"),
            "experiment": self.mlflow.experiment or experiment})
        return self.model_copy(update={"wandb": wandb, "mlflow": mlflow})


def _absolute_file_uri(uri: str) -> str:
    if not uri.startswith("file:"):
        return uri
    path = uri.removeprefix("file:")
    path = path.removeprefix("//") if path.startswith("///") else path  # file:///abs -> /abs
    return Path(path).resolve().as_uri()
