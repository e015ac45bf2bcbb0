"""The blend methods, fitted and scored on OOF logits: the submission the evidence supports.

Every method is fitted inside the person folds (on K-1 folds' OOF rows, scored on the
held-out fold) as well as on all rows; the method is chosen by the nested score, since
weights fitted and scored on the same rows flatter.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import log_loss as sk_log_loss

from orchestrator.analysis.ensembles import attributes
from orchestrator.analysis.ensembles import methods as ens
from orchestrator.analysis.ensembles.attributes import AttributeFit, Extra
from orchestrator.analysis.ensembles.baselines import BASELINES, Comparison, versus_baselines  # noqa: F401
from orchestrator.analysis.ensembles.choice import Choice, choose
from orchestrator.analysis.ensembles.expected import Expectation, expectation, expected_interval
from orchestrator.analysis.ensembles.recipes import Recipe, Weighting, plan_recipes, recipe_by_name
from orchestrator.analysis.ensembles.uncertainty import Interval, PersonBootstrap
from orchestrator.analysis.results import BlendInputs
from tasks.labels import ALL, NUM_CLASSES
from tasks.log import Log, to_stdout
from tasks.metrics import Scores, score
from tasks.spec.experiment import BlendSpec


@dataclass(frozen=True)
class FittedBlend:
    recipe: Recipe
    weights: np.ndarray  # (M,) on the simplex; a per-attribute method's: each model's mean over the attributes
    temperatures: np.ndarray  # (M,)
    offsets: tuple[np.ndarray, ...]  # per decision group (see ensemble.decode_scores)
    bonus: np.ndarray  # (M,) hard-vote tie-break: larger for the better model
    # per_attr_* methods: per attribute one weight per model of the blend (all-class and specialists)
    per_attribute: AttributeFit | None = None

    def to_record(self, models: tuple[str, ...], targets: Sequence[str] | None = None) -> dict:
        """The fitted method as weights.json keeps it, per model by name. `models`: every model of
        the blend, `targets` what each predicts (None: all 18 classes); a method of the 18 classes
        weighs the all-class ones among them, in order, and gives a specialist weight 0."""
        targets = tuple(targets) if targets is not None else (ALL,) * len(models)
        own = list(models) if self.per_attribute else [m for m, t in zip(models, targets) if t == ALL]
        if len(own) != len(self.weights):
            raise ValueError(f"{len(self.weights)} weights for models {own}")
        groups = ("classes",) if self.recipe.decode == "joint" else ("mask", "gender", "age")
        weights = dict(zip(own, self.weights.round(6).tolist()))
        record = {"method": self.recipe.name, "vote": self.recipe.vote, "decode": self.recipe.decode,
                  "weights": {m: weights.get(m, 0.0) for m in models},
                  "temperatures": dict(zip(own, self.temperatures.tolist())),  # exact: it divides every logit
                  "offsets": {g: b.round(3).tolist() for g, b in zip(groups, self.offsets)},
                  "bonus": dict(zip(own, self.bonus.round(6).tolist()))}
        if any(t != ALL for t in targets):
            record["targets"] = dict(zip(models, targets))
        if self.per_attribute is not None:
            record["attribute_weights"] = attributes.weights_record(self.per_attribute, models)
        return record

    @classmethod
    def from_record(cls, record: dict, models: tuple[str, ...], targets: Sequence[str] | None = None) -> FittedBlend:
        """The method `to_record` saved, for `models` in this order (`targets`: what each predicts;
        None: as the record says, else all 18 classes). A model the record lacks gets weight 0; a
        record weighing a model not in `models`, naming a method this version does not plan, or
        giving a model another target, raises BlendRecordError. Apply it with `predict(fitted,
        logits of the all-class models among `models`, {attribute: its specialists' logits})`."""
        if not isinstance(record, dict) or not isinstance(record.get("weights"), dict):
            raise BlendRecordError("not a blend record (no weights)")
        recipe = recipe_by_name(str(record.get("method")))
        if recipe is None:
            raise BlendRecordError(f"method {record.get('method')!r} is not one this version plans")
        unknown = sorted(m for m, w in record["weights"].items() if w > 0 and m not in models)
        if unknown:
            raise BlendRecordError(f"weighs models these results do not hold: {', '.join(unknown)}")
        saved = record.get("targets") or {}
        targets = tuple(targets) if targets is not None else tuple(saved.get(m, ALL) for m in models)
        own = list(models) if recipe.per_attribute_weights else [m for m, t in zip(models, targets) if t == ALL]

        def per_model(key: str, default: float) -> np.ndarray:
            return np.array([float(record.get(key, {}).get(m, default)) for m in own])

        groups = ("classes",) if recipe.decode == "joint" else ("mask", "gender", "age")
        saved_offsets = record.get("offsets") or {}
        offsets = tuple(np.asarray(saved_offsets[g], np.float64) if g in saved_offsets else zero
                        for g, zero in zip(groups, ens.no_offsets(recipe.decode)))
        per_attribute = None
        if recipe.per_attribute_weights:
            try:
                per_attribute = attributes.from_record(record, models, targets, offsets)
            except ValueError as err:
                raise BlendRecordError(str(err)) from None
        return cls(recipe, per_model("weights", 0.0), per_model("temperatures", 1.0), offsets,
                   per_model("bonus", 0.0), per_attribute)


class BlendRecordError(ValueError):
    """A blend record (weights.json) that cannot be applied to these results."""


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray
    probs: np.ndarray | None  # (N, C) for a soft vote


@dataclass(frozen=True)
class Evaluation:
    labels: np.ndarray
    scores: Scores  # macro F1, accuracy and per-attribute F1
    log_loss: float  # NaN for a hard vote
    macro_f1_interval: Interval  # person bootstrap of these fixed labels

    def value(self, metric: ens.Metric) -> float:
        return self.log_loss if metric == "log_loss" else getattr(self.scores, metric)

    def record(self) -> dict:
        return {**self.scores.as_dict(), "macro_f1_interval": self.macro_f1_interval.record(),
                "log_loss": None if np.isnan(self.log_loss) else self.log_loss}


@dataclass(frozen=True)
class MethodResult:
    fitted: FittedBlend  # on all OOF rows
    in_sample: Evaluation
    nested: Evaluation  # fitted on the other folds' rows, pooled over held-out folds
    test_labels: np.ndarray
    versus: tuple[Comparison, ...] = ()  # this method against each baseline (BASELINES)
    expected: Interval | None = None  # macro F1 the submission should score (ensembles.expected); None: no repeats


@dataclass(frozen=True)
class BlendResult:
    metric: ens.Metric
    methods: tuple[MethodResult, ...]  # best nested score first
    versus: tuple[Comparison, ...]  # the chosen method against each planned baseline (BASELINES), in that order
    chosen_index: int = 0  # which of `methods` is chosen
    choice: Choice | None = None
    expectation: Expectation | None = None  # what the expected scores assume; None without folds.repeats

    @property
    def chosen(self) -> MethodResult:
        return self.methods[self.chosen_index]


def fit_recipe(recipe: Recipe, logits: np.ndarray, y: np.ndarray, spec: BlendSpec, cache: dict,
               extra: Extra | None = None) -> FittedBlend:
    """Fit one method; `cache` shares temperatures and weights between methods on the same rows.
    `logits`: the all-class models'; `extra`: each attribute's specialists' (per-attribute methods)."""
    if recipe.per_attribute_weights:
        fitted = attributes.fit(recipe.weighting, recipe.offsets, logits, y, spec, extra, cache)
        n = len(fitted.targets)
        return FittedBlend(recipe, np.mean(fitted.weights, axis=0), np.ones(n), fitted.offsets, np.zeros(n), fitted)

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


def predict(fitted: FittedBlend, logits: np.ndarray, extra: Extra | None = None) -> Prediction:
    """The method's labels (and probabilities) of rows: `logits` (M, N, 18) of the all-class
    models it was fitted on, `extra` each attribute's specialists' (a per-attribute method)."""
    if fitted.per_attribute is not None:
        return Prediction(*attributes.predict(fitted.per_attribute, logits, extra))
    if fitted.recipe.vote == "hard":
        used = fitted.weights > 0
        votes = ens.one_hot_votes(logits[used])
        # float64 so that weights summing to the same count tie exactly
        total = np.tensordot(fitted.weights[used].astype(np.float64), votes, axes=1)
        return Prediction(ens.decide_hard(total, ens.vote_support(votes, fitted.bonus[used])), None)
    probs = ens.blend_probs(ens.model_probs(logits, fitted.temperatures), fitted.weights)
    return Prediction(ens.decide(probs, fitted.recipe.decode, fitted.offsets), probs)


def fit_all(recipes, logits, y, spec: BlendSpec, extra: Extra | None = None) -> dict[str, FittedBlend]:
    cache: dict = {}
    return {r.name: fit_recipe(r, logits, y, spec, cache, extra) for r in recipes}


def _rows(extra: Extra | None, keep: np.ndarray) -> Extra | None:
    return None if extra is None else {a: np.compress(keep, x, axis=1) for a, x in extra.items()}


def predict_nested(recipes, logits, y, fold, spec: BlendSpec, log: Log = to_stdout,
                   extra: Extra | None = None) -> dict[str, Prediction]:
    """Each method fitted on K-1 folds' OOF rows and applied to the held-out fold, pooled
    (specialists' rows, `extra`, split the same way)."""
    labels = {r.name: np.zeros(len(y), np.int64) for r in recipes}
    probs = {r.name: np.zeros((len(y), NUM_CLASSES), np.float32) for r in recipes}
    folds = np.unique(fold)
    for i, k in enumerate(folds):
        start, held = time.perf_counter(), fold == k
        # np.compress keeps (M, N, C) C-contiguous; logits[:, mask] would not, and every
        # later pass over rows would crawl.
        fitted = fit_all(recipes, np.compress(~held, logits, axis=1), y[~held], spec, _rows(extra, ~held))
        for name, f in fitted.items():
            out = predict(f, np.compress(held, logits, axis=1), _rows(extra, held))
            labels[name][held] = out.labels
            if out.probs is not None:
                probs[name][held] = out.probs
        log(f"  nested fold {i + 1}/{len(folds)}: {len(recipes)} methods fitted on {(~held).sum()} rows, "
            f"scored on {held.sum()} ({time.perf_counter() - start:.1f}s)")
    return {r.name: Prediction(labels[r.name], probs[r.name] if r.vote == "soft" else None) for r in recipes}


def evaluate(boot: PersonBootstrap, pred: Prediction) -> Evaluation:
    y = boot.target
    loss = float("nan") if pred.probs is None else float(sk_log_loss(y, pred.probs, labels=range(NUM_CLASSES)))
    return Evaluation(pred.labels, score(y, pred.labels), loss, boot.interval(pred.labels))


def fit_blend(inputs: BlendInputs, spec: BlendSpec, log: Log = to_stdout,
              recipes: tuple[Recipe, ...] | None = None) -> BlendResult:
    """Fit, nest and rank every planned method (or just `recipes`); the first of the result is the
    chosen one."""
    oof, special = inputs.oof, inputs.specialists
    recipes = recipes or plan_recipes(spec, specialists=special is not None)
    extra, test_extra = (None, None) if special is None else (special.oof_logits(), special.test_logits())
    log(f"blending {len(oof.models)} models x {len(oof.target)} OOF rows: {len(recipes)} methods, "
        f"metric {spec.metric}")
    if special is not None:
        log(attributes.specialists_line(special.models, special.targets, recipes, len(oof.models)))
    nested = predict_nested(recipes, oof.logits, oof.target, oof.fold, spec, log, extra)
    one_member, expect = None, None
    if oof.repeat_logits is not None:
        log(f"  nested again on each of the {len(oof.repeat_logits)} repeats alone (one held-out prediction per "
            "row), to measure what averaging adds")
        one_member = [predict_nested(recipes, np.ascontiguousarray(logits), oof.target, oof.fold, spec, log,
                                     None if special is None else special.oof_logits(repeat=r))
                      for r, logits in enumerate(oof.repeat_logits)]
        expect = expectation(len(oof.repeat_logits), len(np.unique(oof.fold)), oof.person,
                             inputs.test.logits.shape[1])
    start = time.perf_counter()
    fitted = fit_all(recipes, oof.logits, oof.target, spec, extra)
    log(f"  all rows: {len(recipes)} methods fitted ({time.perf_counter() - start:.1f}s)")
    start, boot = time.perf_counter(), PersonBootstrap.draw(oof.target, oof.person)
    results = [MethodResult(f, evaluate(boot, predict(f, oof.logits, extra)), evaluate(boot, nested[name]),
                            predict(f, inputs.test.logits, test_extra).labels,
                            expected=None if expect is None else expected_interval(
                                boot, [one[name].labels for one in one_member], nested[name].labels, expect))
               for name, f in fitted.items()]
    # Stable sort: among equal scores the simpler method (planned earlier) is chosen.
    ranked = sorted(results, key=lambda r: (-ens.gain(spec.metric, r.nested.value(spec.metric)),
                                            -r.nested.scores.accuracy))
    # Every method against the baselines (blend/leaderboard.csv), not only the chosen one.
    ranked = [dataclasses.replace(r, versus=versus_baselines(boot, ranked, r)) for r in ranked]
    index, choice = choose(boot, ranked, spec)
    log(f"  scored with {boot.draws.shape[0]} person resamples of {boot.draws.shape[1]} people "
        f"({time.perf_counter() - start:.1f}s)")
    return BlendResult(spec.metric, tuple(ranked), ranked[index].versus, index, choice, expect)

