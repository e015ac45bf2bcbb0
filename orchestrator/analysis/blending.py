"""The blend methods, fitted and scored on OOF logits: the submission the evidence supports.

Every method is fitted inside the person folds (on K-1 folds' OOF rows, scored on the
held-out fold) as well as on all rows; the method is chosen by the nested score, since
weights fitted and scored on the same rows flatter.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss as sk_log_loss

from orchestrator.analysis import ensemble as ens
from orchestrator.analysis.results import BlendInputs
from tasks.atomic import atomic_dir
from tasks.labels import NUM_CLASSES
from tasks.metrics import Scores, score
from tasks.spec import BlendSpec

Weighting = Literal["single", "equal", "greedy", "greedy_log_loss", "greedy_refined"]


@dataclass(frozen=True)
class Recipe:
    name: str
    vote: Literal["soft", "hard"]
    weighting: Weighting
    temperature: bool = False
    offsets: bool = False
    decode: ens.Decode = "joint"


@dataclass(frozen=True)
class FittedBlend:
    recipe: Recipe
    weights: np.ndarray  # (M,) on the simplex
    temperatures: np.ndarray  # (M,)
    offsets: tuple[np.ndarray, ...]  # per decision group (see ensemble.decode_scores)
    bonus: np.ndarray  # (M,) hard-vote tie-break: larger for the better model


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray
    probs: np.ndarray | None  # (N, C) for a soft vote


@dataclass(frozen=True)
class Evaluation:
    labels: np.ndarray
    scores: Scores  # macro F1, accuracy and per-attribute F1
    log_loss: float  # NaN for a hard vote

    def value(self, metric: ens.Metric) -> float:
        return self.log_loss if metric == "log_loss" else getattr(self.scores, metric)

    def record(self) -> dict:
        return {**self.scores.as_dict(), "log_loss": None if np.isnan(self.log_loss) else self.log_loss}


@dataclass(frozen=True)
class MethodResult:
    fitted: FittedBlend  # on all OOF rows
    in_sample: Evaluation
    nested: Evaluation  # fitted on the other folds' rows, pooled over held-out folds
    test_labels: np.ndarray


@dataclass(frozen=True)
class BlendResult:
    metric: ens.Metric
    methods: tuple[MethodResult, ...]  # best nested score first; methods[0] is chosen


def plan_recipes(spec: BlendSpec) -> tuple[Recipe, ...]:
    """The methods to compare; offsets, decoding and hard votes only matter for decisions."""
    decision = spec.metric != "log_loss"
    recipes = [Recipe("single", "soft", "single")]
    if decision:
        recipes += [Recipe("hard_equal", "hard", "equal"), Recipe("hard_weighted", "hard", "greedy")]
    final = ("greedy_refined" if spec.refine else "greedy", spec.temperature)
    stacks = [("equal", False), ("greedy", False)]
    stacks += [("greedy_log_loss", False)] if decision else []
    stacks += [("greedy_refined", False)] if spec.refine else []
    stacks += [final] if spec.temperature else []
    decodes = {"joint": ["joint"], "per_attribute": ["per_attribute"], "both": ["joint", "per_attribute"]}
    for weighting, temperature in stacks:
        for decode in decodes[spec.decode] if decision else ["joint"]:
            tuned = decision and spec.class_offsets and (weighting, temperature) in (("equal", False), final)
            for offsets in (False, True) if tuned else (False,):
                name = (f"soft_{weighting}" + ("_temp" if temperature else "")
                        + ("+attr" if decode == "per_attribute" else "") + ("+offsets" if offsets else ""))
                recipes.append(Recipe(name, "soft", weighting, temperature, offsets, decode))
    return tuple(recipes)


def fit_recipe(recipe: Recipe, logits: np.ndarray, y: np.ndarray, spec: BlendSpec, cache: dict) -> FittedBlend:
    """Fit one method; `cache` shares temperatures and weights between methods on the same rows."""
    def once(key, make: Callable):
        if key not in cache:
            cache[key] = make()
        return cache[key]

    t = recipe.temperature
    temps = once(("temps",), lambda: ens.fit_temperatures(logits, y)) if t else np.ones(len(logits))
    probs = once(("probs", t), lambda: ens.model_probs(logits, temps))
    gains = once(("gains", t), lambda: np.array([ens.score_probs(y, p, spec.metric) for p in probs]))
    bonus = ens.rank_bonus(gains)

    def weights_of(weighting: Weighting) -> np.ndarray:
        if weighting == "single":
            return np.eye(len(logits))[int(np.argmax(gains))]
        if weighting == "equal":
            return np.full(len(logits), 1 / len(logits))
        if recipe.vote == "hard":
            # Adding one model to a lone voter never changes its votes (ties go to the better
            # model), so the greedy search starts from the best three, as teams voted.
            top3 = tuple(np.argsort(-gains, kind="stable")[:3].tolist())
            return ens.select_greedy(ens.one_hot_votes(logits), y, spec.rounds, spec.metric, bonus, top3).weights
        if weighting == "greedy_refined":
            return ens.refine_weights(probs, y, once(("w", "soft", "greedy", t), lambda: weights_of("greedy")),
                                      spec.metric)
        metric = "log_loss" if weighting == "greedy_log_loss" else spec.metric
        return ens.select_greedy(probs, y, spec.rounds, metric).weights

    weights = once(("w", recipe.vote, recipe.weighting, t), lambda: weights_of(recipe.weighting))
    offsets = ens.no_offsets(recipe.decode)
    if recipe.offsets:
        offsets = ens.fit_offsets(ens.blend_probs(probs, weights), y, recipe.decode, spec.metric)
    return FittedBlend(recipe, weights, temps, offsets, bonus)


def predict(fitted: FittedBlend, logits: np.ndarray) -> Prediction:
    if fitted.recipe.vote == "hard":
        used = fitted.weights > 0
        votes = ens.one_hot_votes(logits[used])
        # float64 so that weights summing to the same count tie exactly
        total = np.tensordot(fitted.weights[used].astype(np.float64), votes, axes=1)
        return Prediction(ens.decide_hard(total, ens.vote_support(votes, fitted.bonus[used])), None)
    probs = ens.blend_probs(ens.model_probs(logits, fitted.temperatures), fitted.weights)
    return Prediction(ens.decide(probs, fitted.recipe.decode, fitted.offsets), probs)


def fit_all(recipes, logits, y, spec: BlendSpec) -> dict[str, FittedBlend]:
    cache: dict = {}
    return {r.name: fit_recipe(r, logits, y, spec, cache) for r in recipes}


def predict_nested(recipes, logits, y, fold, spec: BlendSpec) -> dict[str, Prediction]:
    """Each method fitted on K-1 folds' OOF rows and applied to the held-out fold, pooled."""
    labels = {r.name: np.zeros(len(y), np.int64) for r in recipes}
    probs = {r.name: np.zeros((len(y), NUM_CLASSES), np.float32) for r in recipes}
    folds = np.unique(fold)
    for i, k in enumerate(folds):
        start, held = time.perf_counter(), fold == k
        # np.compress keeps (M, N, C) C-contiguous; logits[:, mask] would not, and every
        # later pass over rows would crawl.
        fitted = fit_all(recipes, np.compress(~held, logits, axis=1), y[~held], spec)
        for name, f in fitted.items():
            out = predict(f, np.compress(held, logits, axis=1))
            labels[name][held] = out.labels
            if out.probs is not None:
                probs[name][held] = out.probs
        print(f"  nested fold {i + 1}/{len(folds)}: {len(recipes)} methods fitted on {(~held).sum()} rows, "
              f"scored on {held.sum()} ({time.perf_counter() - start:.1f}s)", flush=True)
    return {r.name: Prediction(labels[r.name], probs[r.name] if r.vote == "soft" else None) for r in recipes}


def evaluate(y: np.ndarray, pred: Prediction) -> Evaluation:
    loss = float("nan") if pred.probs is None else float(sk_log_loss(y, pred.probs, labels=range(NUM_CLASSES)))
    return Evaluation(pred.labels, score(y, pred.labels), loss)


def fit_blend(inputs: BlendInputs, spec: BlendSpec) -> BlendResult:
    """Fit, nest and rank every planned method; the first of the result is the chosen one."""
    oof, recipes = inputs.oof, plan_recipes(spec)
    print(f"blending {len(oof.models)} models x {len(oof.target)} OOF rows: {len(recipes)} methods, "
          f"metric {spec.metric}", flush=True)
    nested = predict_nested(recipes, oof.logits, oof.target, oof.fold, spec)
    start = time.perf_counter()
    fitted = fit_all(recipes, oof.logits, oof.target, spec)
    print(f"  all rows: {len(recipes)} methods fitted ({time.perf_counter() - start:.1f}s)", flush=True)
    results = [MethodResult(f, evaluate(oof.target, predict(f, oof.logits)), evaluate(oof.target, nested[name]),
                            predict(f, inputs.test.logits).labels) for name, f in fitted.items()]
    # Stable sort: among equal scores the simpler method (planned earlier) is chosen.
    ranked = sorted(results, key=lambda r: (-ens.gain(spec.metric, r.nested.value(spec.metric)),
                                            -r.nested.scores.accuracy))
    return BlendResult(spec.metric, tuple(ranked))


def leaderboard(result: BlendResult, truth: np.ndarray | None = None) -> pd.DataFrame:
    rows = []
    for i, r in enumerate(result.methods):
        ins, nest = r.in_sample.scores, r.nested.scores
        row = {"method": r.fitted.recipe.name, "in_sample_macro_f1": ins.macro_f1, "nested_macro_f1": nest.macro_f1,
               "in_sample_accuracy": ins.accuracy, "nested_accuracy": nest.accuracy,
               "nested_mask_f1": nest.mask_f1, "nested_gender_f1": nest.gender_f1, "nested_age_f1": nest.age_f1,
               "in_sample_log_loss": r.in_sample.log_loss, "nested_log_loss": r.nested.log_loss, "chosen": i == 0}
        if truth is not None:
            row["truth_macro_f1"] = score(truth, r.test_labels).macro_f1
        rows.append(row)
    return pd.DataFrame(rows)


def weights_record(result: BlendResult, inputs: BlendInputs, experiment: str, run: dict | None = None) -> dict:
    """weights.json; `run` adds what only the command knows (when, how long, the true score)."""
    chosen = result.methods[0]
    f, models = chosen.fitted, inputs.oof.models
    groups = ("classes",) if f.recipe.decode == "joint" else ("mask", "gender", "age")
    return {"experiment": experiment, "rows_hash": inputs.oof.rows_hash, "metric": result.metric,
            "method": f.recipe.name, "vote": f.recipe.vote, "decode": f.recipe.decode,
            "weights": dict(zip(models, f.weights.round(6).tolist())),
            "temperatures": dict(zip(models, f.temperatures.round(4).tolist())),
            "offsets": {g: b.round(3).tolist() for g, b in zip(groups, f.offsets)},
            "in_sample": chosen.in_sample.record(), "nested": chosen.nested.record(),
            "excluded": [{"model": e.model, "reason": e.reason} for e in inputs.excluded], **(run or {})}


def write_blend(exp_dir: Path, result: BlendResult, inputs: BlendInputs, board: pd.DataFrame,
                run: dict | None = None) -> Path:
    """All outputs into a staging folder, then swapped in whole: a failed run leaves the old ones."""
    target = exp_dir / "blend"
    with atomic_dir(target) as tmp:
        chosen, oof = result.methods[0], inputs.oof
        (tmp / "weights.json").write_text(json.dumps(weights_record(result, inputs, exp_dir.name, run), indent=2))
        board.to_csv(tmp / "leaderboard.csv", index=False)
        pd.DataFrame({"ImageID": inputs.test.image_ids, "ans": chosen.test_labels}).to_csv(
            tmp / "submission.csv", index=False)
        pd.DataFrame({"image_key": oof.image_key, "person": oof.person, "fold": oof.fold, "target": oof.target,
                      "in_sample": chosen.in_sample.labels, "nested": chosen.nested.labels}).to_parquet(
            tmp / "oof_predictions.parquet", index=False)
    return target


def print_board(board: pd.DataFrame) -> None:
    columns = ["method", "in_sample_macro_f1", "nested_macro_f1", "in_sample_accuracy", "nested_accuracy",
               "truth_macro_f1", "chosen"]
    shown = board[[c for c in columns if c in board.columns]].copy()
    shown["chosen"] = np.where(shown.chosen, "<-", "")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
