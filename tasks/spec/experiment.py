"""The one typed experiment spec, loaded from YAML, with dotted `--set` overrides.

Every section forbids unknown keys so a typo is an error, not a silent default.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.errors import UserError
from tasks.spec.augment import AugmentSpec, MixSpec
from tasks.spec.face import FaceSpec
from tasks.spec.overrides import deep_merge
from tasks.spec.pseudo import PseudoSpec, oof_optimistic
from tasks.spec.refit import RefitSpec, refit_problems
from tasks.spec.search_space import SearchSpec, check_search
from tasks.spec.specialists import specialist_problems
from tasks.spec.techniques import EmaSpec, TtaViews, check_tta_flip, neutral_fields
from tasks.spec.tracking import TrackingSpec

# Names become folder names (results/<name>/, jobs/<model>-fold<k>-<hash>/, scratch folders
# that are deleted recursively): one pattern, no separators, no leading dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(value: str) -> str:
    """`value` if it is safe as a single path component, else ValueError saying what is allowed."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a usable name: it names a folder, so use 1-100 letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit")
    return value


def _number_as_text(value: Any) -> Any:
    # `name: 2024` in YAML (or --set name=2024) is an int; as a name it means the text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Name = Annotated[str, BeforeValidator(_number_as_text), AfterValidator(check_name)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(Strict):
    root: Path  # the folder holding train/ and eval/
    relabel: Path | None = None  # CSV person,field,value applied at indexing
    on_bad_image: Literal["stop", "skip"] = "stop"
    on_duplicate: Literal["stop", "keep", "drop"] = "stop"  # photos two people share (tasks/data/duplicates.py)
    cache_size: tuple[int, int] = (128, 96)  # (H, W) images are decoded to, once
    cache_dir: Path | None = None  # default: $MASKFOLD_CACHE or ~/.cache/maskfold
    decode_workers: int = Field(0, ge=0)  # 0 = one per core
    face: FaceSpec | None = None  # crop to the face before caching (tasks/faces/crop.py)


class FoldSpec(Strict):
    n_splits: int = Field(5, ge=2, le=20)
    seed: int = 42
    # R person-fold assignments (repeat r > 0 with seed `seed + r`): each person is held out by
    # one model per repeat, so averaging a person's R held-out predictions shows on OOF rows what
    # averaging fold models does on the eval photos (AutoGluon's num_bag_sets). 1: no repeats.
    repeats: int = Field(1, ge=1, le=10)


LossName = Literal["ce", "weighted_ce", "focal", "label_smoothing", "f1"]


class LossTerm(Strict):
    name: LossName
    weight: float = Field(1.0, ge=0)
    gamma: float = Field(2.0, ge=0)  # focal only
    smoothing: float = Field(0.1, ge=0, lt=1)  # label_smoothing only


class OptimizerSpec(Strict):
    name: Literal["sgd", "adam", "adamw", "madgrad"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class SchedulerSpec(Strict):
    # cyclic: cosine restarts (`cycles` of them); onecycle: a long warm-up to lr, then cosine down.
    name: Literal["none", "step", "cosine", "cyclic", "onecycle", "plateau"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    warmup_lr: float = Field(1e-6, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    decay_epochs: int = Field(3, ge=1)  # step
    decay_rate: float = Field(0.5, gt=0, le=1)  # step and plateau
    patience_epochs: int = Field(1, ge=0)  # plateau
    cycles: int = Field(2, ge=1)  # cyclic


class HeadWeights(Strict):
    mask: float = Field(1.0, ge=0)
    gender: float = Field(1.0, ge=0)
    age: float = Field(1.0, ge=0)


class TrainSpec(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    input_size: tuple[int, int] = (128, 96)  # (H, W) fed to the model
    head: Literal["single", "multi"] = "single"
    # all: the 18 classes. mask, gender or age: a specialist that learns and predicts that
    # attribute alone (3, 2 or 3 classes); the blend weighs models per attribute to use it.
    target: Literal["all", "mask", "gender", "age"] = "all"
    drop_rate: float = Field(0.2, ge=0, lt=1)
    head_weights: HeadWeights = HeadWeights()
    age_mse: float = Field(0.0, ge=0)  # multi head or age specialist: weight of the age regression term
    loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="ce")], min_length=1)
    optimizer: OptimizerSpec = OptimizerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    augment: AugmentSpec = AugmentSpec()
    mix: MixSpec = MixSpec()
    sampler: Literal["none", "weighted", "oversample_old"] = "none"
    # Training labels only: validation and OOF always use the competition's bands.
    age_borders: tuple[int, int] = (30, 60)
    # Drop from training the people this many years below a true border (3: ages 27-29, 57-59),
    # whose photos look most like the next band; never dropped from validation.
    drop_age_margin: int = Field(0, ge=0, le=10)
    patience: int = Field(3, ge=1)
    tta_flip: bool = True
    tta: TtaViews | None = None  # None: flip as tta_flip says (techniques.py: views, how they combine)
    ema: EmaSpec | None = None  # a moving average of the weights is what is validated and saved
    grad_accum: int = Field(1, ge=1)  # one optimiser step every this many batches
    clip_grad: float | None = Field(None, gt=0)  # the gradients' total 2-norm is clipped to this
    amp: Literal["auto", "fp16", "bf16", "off"] = "auto"  # auto: fp16 on CUDA, off on CPU
    channels_last: bool = True
    loader_workers: int = Field(2, ge=0)

    @field_validator("age_borders")
    @classmethod
    def _ordered_borders(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not v[0] < v[1]:
            raise ValueError(f"borders must increase, got {list(v)}")
        return v

    _tta_agrees_with_flip = field_validator("tta")(check_tta_flip)

    def identity(self) -> dict:
        """What determines a job's result: not the loader's workers, nor techniques.py's options left off."""
        # target: only a specialist's (not all) is in it, so every earlier job keeps its id
        unset = {"loader_workers", *neutral_fields(self), *({"target"} if self.target == "all" else ())}
        return self.model_dump(mode="json", exclude=unset)


class ModelSpec(Strict):
    backbone: str  # any timm model name, passed straight to timm.create_model
    # Unique id in results; default: the backbone (timm names are safe folder names).
    name: Annotated[str, BeforeValidator(_number_as_text), AfterValidator(lambda v: v and check_name(v))] = ""
    pretrained: bool = False
    pretrained_path: Path | None = None
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the experiment's train

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        import timm  # deferred: timm imports torch, which the CLI help should not wait for

        if not timm.is_model(v):
            close = timm.list_models(f"*{v.split('_')[0]}*")[:5]
            raise ValueError(f"unknown timm backbone {v!r}; similar: {close}")
        return v

    @model_validator(mode="after")
    def _default_name(self) -> ModelSpec:
        if not self.name:
            object.__setattr__(self, "name", self.backbone)
        return self


SLOT_LIMITS = ("slot_jobs", "slot_memory_gb")


class ResourcesSpec(Strict):
    slot: str = "GPU"  # "GPU" pins real GPUs; any other name is a custom resource
    cpus_per_worker: float = Field(4, gt=0)
    # More than one: each job trains data-parallel (DDP) over that many workers, each holding
    # a slot; train.batch_size is then per worker. One is usual: folds x models fill the GPUs.
    workers_per_job: int = Field(1, ge=1)
    accelerator_type: str | None = None  # e.g. "V100"
    max_failures: int = Field(2, ge=0)
    # A slot's process trains job after job; it is replaced by a fresh one after this many jobs
    # (0: never) or once its resident memory passes this many GB after a job (0: no bound).
    slot_jobs: int = Field(0, ge=0)
    slot_memory_gb: float = Field(16, ge=0)


class BlendSpec(Strict):
    metric: Literal["macro_f1", "accuracy", "log_loss"] = "macro_f1"
    rounds: int = Field(50, ge=1)
    refine: bool = True
    temperature: bool = True
    class_offsets: bool = True
    decode: Literal["joint", "per_attribute", "both"] = "both"
    # best: the best nested score. one_se: the simplest method whose nested score is within one
    # standard error (person bootstrap, paired) of the best one; on synthetic draws it scored
    # lower on the eval photos (benchmarks/README.md, "Estimate"), so it is not the default.
    choose: Literal["best", "one_se"] = "best"


class Experiment(Strict):
    name: Name
    seed: int = 0
    data: DataSpec
    folds: FoldSpec = FoldSpec()
    train: TrainSpec = TrainSpec()
    models: list[ModelSpec] = Field(min_length=1)
    resources: ResourcesSpec = ResourcesSpec()
    blend: BlendSpec = BlendSpec()
    search: SearchSpec | None = None  # what `orchestrator.search` samples; `run` ignores it
    pseudo: PseudoSpec | None = None  # a second round on eval photos labelled by `pseudo.source`
    refit: RefitSpec | None = None  # after the folds, models trained on every person (tasks/spec/refit.py)
    tracking: TrackingSpec = TrackingSpec()  # an observer: in no hash (see spec_hash)
    results_dir: Path = Path("results")

    @model_validator(mode="after")
    def _models_resolve(self) -> Experiment:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: duplicate names {dup}; give each a distinct `name`")
        problems = []
        for i, model in enumerate(self.models):
            try:
                problems += specialist_problems(i, model, self.train_for(model))
            except ValidationError as err:
                problems += [f"models.{i}.train.{line}" for line in error_lines(err)]
        if not problems and all(self.train_for(m).target != "all" for m in self.models):
            problems.append("models: every model is a specialist (train.target); keep at least one with target: all "
                            "(the default): the blend's 18-class methods, the audit and the report need one")
        if self.folds.repeats > 1:
            problems += [f"folds.repeats: {self.folds.repeats} repeats do not combine with `{part}:` yet; "
                         f"set folds.repeats: 1 for {what}" for part, what in
                         (("pseudo", "a pseudo-label round"), ("search", "a search"))
                         if getattr(self, part) is not None]
        if not problems:
            trains = {m.name: self.train_for(m) for m in self.models}
            problems += refit_problems(self.refit, {n: t.target for n, t in trains.items()},
                                       {n: t.scheduler.name for n, t in trains.items()},
                                       {"pseudo": self.pseudo is not None, "search": self.search is not None})
        if self.search is not None:
            problems += check_search(self.search, self.model_dump(mode="json", exclude={"search"}), self.folds.n_splits)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def train_for(self, model: ModelSpec) -> TrainSpec:
        """The experiment's train section with the model's own overrides on top."""
        merged = deep_merge(self.train.model_dump(mode="json"), model.train)
        return TrainSpec.model_validate(merged)

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r} in experiment {self.name!r}")

    @property
    def out_dir(self) -> Path:
        return self.results_dir / self.name

    def resolved(self) -> Experiment:
        """Every path absolute, as the driver sees it, so workers in other folders (or nodes)
        find the same files."""
        data = self.data.model_copy(update={
            "root": self.data.root.resolve(),
            "relabel": self.data.relabel.resolve() if self.data.relabel else None,
            "face": self.data.face.model_copy(update={"boxes": self.data.face.boxes.resolve()})
            if self.data.face and self.data.face.boxes else self.data.face,
            "cache_dir": self.data.cache_dir.resolve() if self.data.cache_dir else None})
        models = [m.model_copy(update={"pretrained_path": m.pretrained_path.resolve() if m.pretrained_path else None})
                  for m in self.models]
        results_dir = self.results_dir.resolve()
        tracking = self.tracking.resolved(self.name, results_dir / self.name)
        pseudo = self.pseudo.model_copy(update={"source": self.pseudo.source.resolve()}) if self.pseudo else None
        return self.model_copy(update={"data": data, "models": models, "results_dir": results_dir,
                                       "tracking": tracking, "pseudo": pseudo})

    @property
    def oof_optimistic(self) -> bool:
        """Its models' OOF scores are flattered (pseudo labels from models that saw every fold)."""
        return oof_optimistic(self.pseudo)

    def shared_hash(self) -> str:
        """Hash of what makes OOF rows of different models comparable: data, folds, seed."""
        return stable_hash(
            # on_duplicate: its effect on the rows is in the data hash (only when photos are shared),
            # so adding the field kept every earlier experiment's hashes and finished jobs.
            # face: its effect is in the data hash (settings and boxes file content, not its path).
            {"data": self.data.model_dump(mode="json", exclude={"cache_dir", "decode_workers", "on_duplicate", "face"}),
             # repeats: repeat 0's rows are the same for any count, so adding repeats keeps every hash.
             "folds": self.folds.model_dump(mode="json", exclude={"repeats"}), "seed": self.seed}
        )

    def spec_hash(self) -> str:
        # How to look for settings (search) and where results are logged (tracking) do not
        # change what a run trains: either on or off keeps every hash. No data.face, no pseudo:
        # the hash it always had.
        unset = {"data": {"face"}} if self.data.face is None else {}
        unset |= {"pseudo": True} if self.pseudo is None else ({"pseudo": {"per_class"}} if self.pseudo.per_class is None
                                                                else {})
        unset |= {"folds": {"repeats"}} if self.folds.repeats == 1 else {}
        # When a slot's process is replaced changes no result.
        unset |= {"resources": set(SLOT_LIMITS), "blend": {"choose"}}  # nor how the blend picks its method
        # train options left off, and `target: all` (specialists came later): the hash they had before
        unset |= {"train": neutral_fields(self.train) | ({"target"} if self.train.target == "all" else set())}
        # refit: a phase after the folds; its models' identity is their own (tasks.job_io.refit_hash)
        dump = self.model_dump(mode="json", exclude={"name": True, "results_dir": True, "search": True,
                                                     "tracking": True, "refit": True, **unset})
        for model in dump["models"]:  # a model that says `target: all` trains what it did without it
            if model["train"].get("target") == "all":
                model["train"] = {k: v for k, v in model["train"].items() if k != "target"}
        return stable_hash(dump)


class SpecError(UserError, ValueError):
    """A spec that does not validate; the message names the file and each field path."""


def stable_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def error_lines(err: ValidationError) -> list[str]:
    """One `field.path: message` line per error; nested messages keep their own paths."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        lines += [f"{loc}: {m}" if loc else m for m in msg.splitlines()]
    return lines
