"""Per-attribute blending (the per_attr_* methods): mask, gender and age band each blended from
every model that predicts it, then the 18-class decision from the three.

An all-class model predicts every attribute: its member for attribute a is its marginal
probability over a (its 18 probabilities summed over the other two attributes). A specialist
(`train.target`) predicts its attribute alone: its member is its own softmax. So a specialist
much better at the age band can take the age weight while the all-class models keep mask and
gender. Weights per attribute lie on that attribute's simplex of members: equal, or greedy
forward selection (Caruana) on the blend metric of that attribute's own classes. The decision
is the argmax of each attribute's blended log-probability plus its offsets (fitted for the
18-class metric, as per-attribute decoding does), composed into the class.

The blend's models are the all-class ones first, then the specialists (`targets` names each
one's target); a fitted per-attribute weighting holds, per attribute, one weight per model of
the blend (0 for a specialist of another attribute).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.analysis.ensembles import methods as ens
from tasks.labels import ALL, ATTRIBUTE_SIZES, ATTRIBUTES, target_labels
from tasks.spec.experiment import BlendSpec

# Each attribute's specialists' logits, (S_a, N, k_a) (orchestrator.analysis.specialists).
Extra = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class AttributeFit:
    weights: tuple[np.ndarray, ...]  # per attribute (ATTRIBUTES order): (models,) on its members' simplex
    offsets: tuple[np.ndarray, ...]  # per attribute, its classes' log-score offsets
    targets: tuple[str, ...]  # per model of the blend: "all" or its attribute


def blend_targets(all_class: int, extra: Extra | None) -> tuple[str, ...]:
    """The blend's models' targets: the all-class ones, then each attribute's specialists."""
    return (ALL,) * all_class + tuple(a for a in ATTRIBUTES for _ in range(len((extra or {}).get(a, ()))))


def member_index(targets: tuple[str, ...], attribute: str) -> list[int]:
    """The models that predict `attribute`, in member order: all-class ones, then its specialists."""
    return [i for i, t in enumerate(targets) if t == ALL] + [i for i, t in enumerate(targets) if t == attribute]


def members(logits: np.ndarray, extra: Extra | None, attribute: str) -> np.ndarray:
    """(members, N, k) probabilities over `attribute`'s classes: the all-class models' marginals,
    then its specialists' softmax."""
    cube = ens.softmax(logits).reshape(*logits.shape[:2], 3, 2, 3)
    axes = {"mask": (3, 4), "gender": (2, 4), "age": (2, 3)}[attribute]
    own = (extra or {}).get(attribute)
    parts = [cube.sum(axes)] + ([ens.softmax(own)] if own is not None and len(own) else [])
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))


def weigh(probs: np.ndarray, y: np.ndarray, weighting: str, spec: BlendSpec) -> np.ndarray:
    """One attribute's member weights: equal, or greedy selection on its own classes."""
    if weighting == "equal":
        return np.full(len(probs), 1 / len(probs))
    return ens.select_greedy(probs, y, spec.rounds, spec.metric).weights


def fit(weighting: str, offsets: bool, logits: np.ndarray, y: np.ndarray, spec: BlendSpec, extra: Extra | None,
        cache: dict) -> AttributeFit:
    """Per-attribute weights (and offsets) on these rows; `cache` shares members and weights
    between the methods fitted on the same rows."""
    def once(key, make: Callable):
        if key not in cache:
            cache[key] = make()
        return cache[key]

    targets = blend_targets(len(logits), extra)
    weights, groups = [], []
    for a in ATTRIBUTES:
        probs = once(("attr_members", a), lambda a=a: members(logits, extra, a))
        own = once(("attr_w", a, weighting), lambda a=a, probs=probs: weigh(probs, target_labels(y, a), weighting,
                                                                              spec))
        full = np.zeros(len(targets))
        full[member_index(targets, a)] = own
        weights.append(full)
        groups.append(np.log(np.maximum(ens.blend_probs(probs, own), ens.PROB_FLOOR)))
    fitted = (ens.fit_group_offsets(groups, y, "per_attribute", spec.metric) if offsets
              else ens.no_offsets("per_attribute"))
    return AttributeFit(tuple(weights), fitted, targets)


def blended(fitted: AttributeFit, logits: np.ndarray, extra: Extra | None) -> list[np.ndarray]:
    """Per attribute the (N, k) blended probabilities of these rows."""
    check_extra(fitted.targets, len(logits), extra)
    return [ens.blend_probs(members(logits, extra, a), w[member_index(fitted.targets, a)])
            for a, w in zip(ATTRIBUTES, fitted.weights)]


def predict(fitted: AttributeFit, logits: np.ndarray, extra: Extra | None) -> tuple[np.ndarray, np.ndarray]:
    """18-class labels and (N, 18) probabilities (the product of the three attributes')."""
    probs = blended(fitted, logits, extra)
    groups = [np.log(np.maximum(p, ens.PROB_FLOOR)) for p in probs]
    joint = np.einsum("nm,ng,na->nmga", *probs).reshape(len(probs[0]), -1)
    return ens.decide_groups(groups, "per_attribute", fitted.offsets), joint.astype(np.float32)


def check_extra(targets: tuple[str, ...], all_class: int, extra: Extra | None) -> None:
    """The logits given are the ones the weights are for: as many all-class models and, per
    attribute, specialists of its width."""
    want = {a: sum(t == a for t in targets) for a in ATTRIBUTES}
    have = {a: len((extra or {}).get(a, ())) for a in ATTRIBUTES}
    if all_class != sum(t == ALL for t in targets) or want != have:
        raise ValueError(f"per-attribute weights for {sum(t == ALL for t in targets)} all-class models and "
                         f"specialists {want}, given {all_class} and {have}")
    for a, logits in (extra or {}).items():
        if len(logits) and logits.shape[-1] != ATTRIBUTE_SIZES[a]:
            raise ValueError(f"{a} specialists' logits have {logits.shape[-1]} classes, not {ATTRIBUTE_SIZES[a]}")


def weights_record(fitted: AttributeFit, models: Sequence[str]) -> dict:
    """weights.json's `attribute_weights`: per attribute, the weight of each model that predicts it."""
    return {a: {m: round(float(w[i]), 6) for i, m in enumerate(models) if fitted.targets[i] in (ALL, a)}
            for a, w in zip(ATTRIBUTES, fitted.weights)}


def from_record(record: dict, models: Sequence[str], targets: Sequence[str], offsets) -> AttributeFit:
    """The per-attribute weights weights_record saved, for `models` (of `targets`) in this order;
    ValueError if the record has none, or names a model's target otherwise."""
    saved, weights = record.get("targets") or {}, record.get("attribute_weights")
    if not isinstance(weights, dict) or set(weights) != set(ATTRIBUTES):
        raise ValueError(f"method {record.get('method')!r} without its per-attribute weights (attribute_weights)")
    other = [f"{m} predicts {saved[m]} there, {t} here" for m, t in zip(models, targets) if saved.get(m, t) != t]
    if other:
        raise ValueError(f"the record's models predict other targets: {'; '.join(other)}")
    arrays = tuple(np.array([float(weights[a].get(m, 0.0)) if t in (ALL, a) else 0.0 for m, t in zip(models, targets)])
                   for a in ATTRIBUTES)
    return AttributeFit(arrays, tuple(offsets), tuple(targets))


def split_logits(targets: Sequence[str], logits: Sequence[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-model logits of the blend's models (in `targets`' order, each (N, 18) or (N, k)) as
    `predict` takes them: the all-class models' (M, N, 18) stack and each attribute's specialists'."""
    stack = np.stack([x for x, t in zip(logits, targets) if t == ALL])
    extra = {a: np.stack([x for x, t in zip(logits, targets) if t == a]) for a in ATTRIBUTES if a in targets}
    return stack, extra


def specialists_line(models: Sequence[str], targets: Sequence[str], recipes, all_class: int) -> str:
    """Said once: which methods see the specialists (the per-attribute ones) and which cannot."""
    own = sum(r.per_attribute_weights for r in recipes)
    named = ", ".join(f"{m} ({t})" for m, t in zip(models, targets))
    return (f"  specialists {named}: the {own} per_attr_* methods use all {all_class + len(models)} models; the "
            f"{len(recipes) - own} others need 18-class logits of every model and use the {all_class} all-class ones")
