"""Several experiments (e.g. a round 1 and its pseudo-label round 2) blended as one pool of models.

Models of different experiments can be blended only if their OOF rows are the same rows held
out the same way: the same images, people, folds and given labels, and test logits of the same
eval images in the same order. Anything else is a ResultsError naming both folders, before
anything is fitted or written. Pooled models are named `<experiment>/<model>` (a model's name
may repeat across rounds; neither name can hold a '/'); one experiment keeps its own names.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.analysis.refit import RefitUse
from orchestrator.analysis.results import (
    BlendInputs,
    EvalLogits,
    Exclusion,
    OofLogits,
    all_class_models,
    load_blend_inputs,
    load_oof,
)
from orchestrator.analysis.results_folder import ResultsError, find_experiment, load_experiment
from orchestrator.analysis.specialists import Specialists
from tasks.labels import ALL, ATTRIBUTES
from tasks.log import Log, silent, to_stdout
from tasks.spec.experiment import Experiment
from tasks.user_files import check_folder

SEPARATOR = "/"


@dataclass(frozen=True)
class Source:
    name: str  # the results folder's name: the prefix of its models' pooled names
    exp_dir: Path
    spec: Experiment


@dataclass(frozen=True)
class PooledModel:
    name: str  # as in weights.json and the report
    experiment: str
    model: str  # as in its own experiment
    oof_optimistic: bool  # trained on pseudo labels from models that saw every fold
    target: str = ALL  # what it predicts: the 18 classes, or a specialist's attribute


@dataclass(frozen=True)
class Pool:
    sources: tuple[Source, ...]
    inputs: BlendInputs  # every source's models, in source order
    models: tuple[PooledModel, ...]  # in inputs.oof.models' order, then inputs.specialists.models'


def pooled_name(experiment: str, model: str, several: bool) -> str:
    return f"{experiment}{SEPARATOR}{model}" if several else model


def load_sources(results: Sequence[Path] | None, overrides: Sequence[str] = (),
                 log: Log = silent) -> tuple[Source, ...]:
    """Each `--results` folder with its own saved spec (the default: the one gathered last, named in `log`)."""
    dirs = [find_experiment(r) for r in results] if results else [find_experiment(None, log=log)]
    seen: dict[str, Path] = {}
    for d in dirs:
        name = d.resolve().name
        if name in seen:
            same = d.resolve() == seen[name].resolve()
            raise ResultsError(f"{seen[name]} and {d}: " + (
                "the same experiment given twice; give each --results once" if same else
                "two experiments with the same folder name, so their models' pooled names "
                "(<experiment>/<model>) would clash; copy one to a folder of another name"))
        seen[name] = d
    sources = tuple(Source(d.resolve().name, d, load_experiment(d, overrides)) for d in dirs)
    first = sources[0]
    for other in sources[1:]:
        if other.spec.folds.n_splits != first.spec.folds.n_splits:
            raise ResultsError(_differ(first, other, "folds", f"folds.n_splits is {first.spec.folds.n_splits} in "
                                     f"{first.exp_dir / 'spec.yaml'} and {other.spec.folds.n_splits} in "
                                     f"{other.exp_dir / 'spec.yaml'}", SAME_FOLDS))
    return sources


SAME_FOLDS = ("a model's OOF rows are comparable with another's only if the same people were held out "
              "together; blend experiments prepared with the same data, folds.* and seed")


def _differ(a: Source, b: Source, what: str, detail: str, remedy: str) -> str:
    return f"{a.exp_dir} and {b.exp_dir} do not have the same {what}: {detail}; {remedy}"


def check_same_rows(a: Source, x: OofLogits, b: Source, y: OofLogits) -> None:
    """The same OOF images, each with the same person, fold and given label."""
    if not np.array_equal(x.image_key, y.image_key):
        only_a, only_b = np.setdiff1d(x.image_key, y.image_key), np.setdiff1d(y.image_key, x.image_key)
        example = f"e.g. {only_a[0]}" if len(only_a) else f"e.g. {only_b[0]}"
        raise ResultsError(_differ(a, b, "OOF rows", f"{len(only_a)} images only in {a.name}, {len(only_b)} only "
                                 f"in {b.name} ({example})", "they were made from other training data (data.root, "
                                 "on_bad_image, on_duplicate, face); blend experiments of the same images"))
    moved = np.flatnonzero((x.fold != y.fold) | (x.person != y.person))
    if len(moved):
        i = moved[0]
        raise ResultsError(_differ(a, b, "folds", f"{len(moved)} OOF images are held out in another fold or as "
                                 f"another person (see each folds.parquet), e.g. {x.image_key[i]}: fold {x.fold[i]} "
                                 f"(person {x.person[i]}) in {a.name}, fold {y.fold[i]} (person {y.person[i]}) in "
                                 f"{b.name}", SAME_FOLDS))
    relabelled = np.flatnonzero(x.target != y.target)
    if len(relabelled):
        i = relabelled[0]
        files = f"data.relabel {a.spec.data.relabel or 'none'} in {a.name}, {b.spec.data.relabel or 'none'} in {b.name}"
        raise ResultsError(_differ(a, b, "targets", f"{len(relabelled)} OOF images have another given label, e.g. "
                                 f"{x.image_key[i]}: class {x.target[i]} in {a.name}, class {y.target[i]} in "
                                 f"{b.name} ({files})", "models scored on other labels cannot be chosen between; "
                                 "blend experiments made with the same relabel file, or re-run one with the other's"))


def check_same_eval(a: Source, x: EvalLogits, b: Source, y: EvalLogits) -> None:
    """The same eval ImageIDs in the same order: the submission's rows."""
    if np.array_equal(x.image_ids, y.image_ids):
        return
    n = min(len(x.image_ids), len(y.image_ids))
    at = next((i for i in range(n) if x.image_ids[i] != y.image_ids[i]), n)
    first = (f"first difference at row {at + 1}: {x.image_ids[at] if at < len(x.image_ids) else 'none'} in "
             f"{a.name}, {y.image_ids[at] if at < len(y.image_ids) else 'none'} in {b.name}")
    raise ResultsError(_differ(a, b, "eval set", f"{len(x.image_ids)} and {len(y.image_ids)} ImageIDs, {first} "
                             f"(eval/info.csv under data.root {a.spec.data.root} and {b.spec.data.root})",
                             "blend experiments whose test logits cover the same eval/info.csv (--set data.root=... "
                             "applies to every --results)"))


def _models_of(sources: tuple[Source, ...], names_per_source: list[tuple[str, ...]]) -> tuple[PooledModel, ...]:
    several = len(sources) > 1
    return tuple(PooledModel(pooled_name(s.name, m, several), s.name, m, s.spec.oof_optimistic)
                 for s, names in zip(sources, names_per_source) for m in names)


def pool_specialists(sources: tuple[Source, ...], each: list[BlendInputs]) -> tuple[Specialists | None,
                                                                                    tuple[PooledModel, ...]]:
    """Every source's specialists per attribute under their pooled names (rows: checked against
    each source's all-class rows, which pool_oof checked to be the same)."""
    oof, test, models = {}, {}, []
    for a in ATTRIBUTES:
        have = [(s, i.specialists) for s, i in zip(sources, each) if i.specialists and a in i.specialists.oof]
        if not have:
            continue
        named = tuple(PooledModel(pooled_name(s.name, m, len(sources) > 1), s.name, m, s.spec.oof_optimistic, a)
                      for s, sp in have for m in sp.oof[a].models)
        first_oof, first_test = have[0][1].oof[a], have[0][1].test[a]
        names = tuple(m.name for m in named)
        oof[a] = OofLogits(names, np.concatenate([sp.oof[a].logits for _, sp in have]), first_oof.image_key,
                           first_oof.person, first_oof.fold, first_oof.target, first_oof.rows_hash, ())
        test[a] = EvalLogits(names, np.concatenate([sp.test[a].logits for _, sp in have]), first_test.image_ids,
                             first_test.rows_hash, ())
        models += named
    return (Specialists(oof, test) if oof else None), tuple(models)


def _exclusions(sources: tuple[Source, ...], each: list[tuple[Exclusion, ...]]) -> tuple[Exclusion, ...]:
    several = len(sources) > 1
    return tuple(Exclusion(pooled_name(s.name, e.model, several), e.reason) for s, ex in zip(sources, each)
                 for e in ex)


def pool_oof(sources: tuple[Source, ...], oofs: list[OofLogits]) -> tuple[OofLogits, tuple[PooledModel, ...]]:
    """One OofLogits of every source's models (rows checked to be the same first)."""
    for s, oof in zip(sources[1:], oofs[1:]):
        check_same_rows(sources[0], oofs[0], s, oof)
    models = _models_of(sources, [o.models for o in oofs])
    x = oofs[0]
    pooled = OofLogits(tuple(m.name for m in models), np.concatenate([o.logits for o in oofs]), x.image_key,
                       x.person, x.fold, x.target, x.rows_hash, _exclusions(sources, [o.excluded for o in oofs]))
    return pooled, models


def pooled_refit(sources, uses: list) -> RefitUse | None:
    """The pool's refit record: each experiment's refit models under their pooled names."""
    have = [(s, u) for s, u in zip(sources, uses) if u is not None]
    if not have:
        return None
    return RefitUse(tuple(pooled_name(s.name, m, True) for s, u in have for m in u.models),
                    "/".join(sorted({u.combine for _, u in have})),
                    tuple(pooled_name(s.name, m, True) for s, u in have for m in u.missing))


def load_pool(sources: tuple[Source, ...], log: Log = to_stdout) -> Pool:
    """Every source's complete models as one BlendInputs, or a ResultsError before anything is fitted."""
    each = []
    for s in sources:
        if len(sources) > 1:
            log(f"experiment {s.name}: {s.exp_dir}" + (" (OOF optimistic)" if s.spec.oof_optimistic else ""))
        each.append(load_blend_inputs(s.exp_dir, s.spec, log))
    specialists, special_models = pool_specialists(sources, each)
    if len(sources) == 1:  # exactly today's inputs and names
        inputs = each[0]
        return Pool(sources, inputs, _models_of(sources, [inputs.oof.models]) + special_models)
    oof, models = pool_oof(sources, [i.oof for i in each])
    for s, i in zip(sources[1:], each[1:]):
        check_same_eval(sources[0], each[0].test, s, i.test)
    t = each[0].test
    test = EvalLogits(oof.models, np.concatenate([i.test.logits for i in each]), t.image_ids, t.rows_hash,
                      oof.excluded, pooled_refit(sources, [i.test.refit for i in each]))
    inputs = BlendInputs(oof, test, _exclusions(sources, [i.excluded for i in each]), specialists)
    models += special_models
    log(f"pooled {len(models)} models of {len(sources)} experiments: "
        + ", ".join(f"{s.name} ({sum(m.experiment == s.name for m in models)})" for s in sources))
    return Pool(sources, inputs, models)


def output_folder(out: Path | None, sources: tuple[Source, ...]) -> Path:
    """Where blend/ and report.html go: `--out`, else the first experiment's folder; never the
    folder of an experiment not blended here, nor the pseudo.source of one that is: that blend/
    made its pseudo labels, and a re-run of that round builds them from it again."""
    folder = out or sources[0].exp_dir
    if out is not None and (out / "spec.yaml").is_file() and out.resolve() not in {s.exp_dir.resolve() for s in sources}:
        raise ResultsError(f"--out {out}: the results folder of another experiment, which is not blended here; "
                           "its own blend/ and report would be replaced: pick a new folder")
    for s in sources:
        if s.spec.pseudo is not None and s.spec.pseudo.source.resolve() == folder.resolve():
            raise ResultsError(f"{folder} is the pseudo.source of {s.exp_dir}: its blend/ made that round's pseudo "
                               f"labels and must stay as it is, so the blend of both cannot replace it; write it "
                               f"elsewhere with --out DIR (e.g. --out {folder.parent / 'rounds'})")
    # before anything is fitted: a blend that cannot be written would only be lost at the end
    check_folder(folder / "blend", "the blend's output folder", "move that file away, or give another --out DIR")
    return folder


def sources_record(sources: tuple[Source, ...], out_dir: Path) -> list[dict]:
    """weights.json's list of blended experiments; paths relative to the output folder, so a
    results/ tree moved or copied whole still finds them (the report reads them again)."""
    return [{"name": s.name, "path": os.path.relpath(s.exp_dir.resolve(), out_dir.resolve()),
             "oof_optimistic": s.spec.oof_optimistic} for s in sources]


def recorded_dirs(out_dir: Path, weights: dict) -> list[Path]:
    """The experiments a blend in `out_dir` pooled (older weights.json: `out_dir` alone)."""
    listed = weights.get("experiments") or [{"path": "."}]
    return [Path(os.path.normpath(out_dir / e["path"])) for e in listed]


def blended_oof(out_dir: Path, overrides: Sequence[str] = ()) -> tuple[OofLogits, Experiment]:
    """The OOF logits of the models out_dir/blend/ weighs, pooled as the blend pooled them, and
    the first experiment's spec: what the report is drawn from. Without a blend yet: out_dir's
    own models (the spec and logits are checked first; the report then asks for the blend)."""
    path = out_dir / "blend" / "weights.json"
    weights = json.loads(path.read_text()) if path.is_file() else {}
    sources = load_sources(recorded_dirs(out_dir, weights), overrides)
    oofs = [load_oof(s.exp_dir / "oof.parquet", s.spec.folds.n_splits, all_class_models(s.spec),
                     s.exp_dir / "folds.parquet") for s in sources]
    oof, _ = pool_oof(sources, oofs)
    keep = [i for i, m in enumerate(oof.models) if m in weights.get("weights", oof.models)]  # what the blend saw
    oof = OofLogits(tuple(oof.models[i] for i in keep), oof.logits[keep], oof.image_key, oof.person, oof.fold,
                    oof.target, oof.rows_hash, oof.excluded)
    return oof, sources[0].spec


def is_blend_folder(folder: Path | None) -> bool:
    """A `blend --out` folder: a blend's outputs without an experiment of its own."""
    return folder is not None and not (folder / "spec.yaml").is_file() and (folder / "blend" / "weights.json").is_file()
