"""Vectorised blending methods on (model, row, class) arrays.

Candidate blends are scored together: confusion matrices of a whole batch of predictions
come from one `np.bincount`, so a round of greedy selection over every model costs a few
array passes instead of one `sklearn.metrics.f1_score` call per candidate, and rows that
no candidate can change are counted once instead of per candidate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from tasks.labels import NUM_CLASSES, class_of

Metric = Literal["macro_f1", "accuracy", "log_loss"]
Decode = Literal["joint", "per_attribute"]
C = NUM_CLASSES
# Scores this close count as tied, so that ties do not depend on summation order.
TIE = 1e-12
# Covers float32 rounding of sums of up to a few hundred members.
SLACK = 1e-3
PROB_FLOOR = 1e-7
OFFSET_GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 2)


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Class probabilities along the last axis, float32."""
    z = np.asarray(logits, np.float32) / np.asarray(temperature, np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def model_probs(logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """(M, N, C) probabilities, each model at its own temperature."""
    return softmax(logits, np.asarray(temperatures, np.float32)[:, None, None])


def blend_probs(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average of (M, N, C) model probabilities."""
    return np.tensordot(np.asarray(weights, np.float32), probs, axes=1)


def confusion_batch(y: np.ndarray, preds: np.ndarray, classes: int = C) -> np.ndarray:
    """(B, C, C) confusion matrices (rows true, columns predicted) of (B, N) predictions;
    `classes`: C of another label set (one attribute's)."""
    preds = np.atleast_2d(preds)
    batch, c = preds.shape[0], classes
    idx = (np.arange(batch)[:, None] * c + y[None, :]) * c + preds
    return np.bincount(idx.ravel(), minlength=batch * c * c).reshape(batch, c, c)


def metric_of_confusion(conf: np.ndarray, metric: Metric) -> np.ndarray:
    """Macro F1 or accuracy of each (C, C) matrix in a (B, C, C) batch."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(np.float64)
    if metric == "accuracy":
        return tp.sum(-1) / conf.sum((-2, -1))
    if metric != "macro_f1":
        raise ValueError(f"{metric} is not a decision metric")
    # Like sklearn's average="macro": a class neither present nor predicted is left out.
    denom = conf.sum(-1) + conf.sum(-2)
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=present)
    return f1.sum(-1) / present.sum(-1)


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    true = probs[np.arange(len(y)), y]
    return float(-np.log(np.maximum(true, PROB_FLOOR)).mean())


def gain(metric: Metric, value):
    """Higher is better for every metric (log loss is negated)."""
    return -value if metric == "log_loss" else value


def score_probs(y: np.ndarray, probs: np.ndarray, metric: Metric) -> float:
    """Gain of one blend of (N, C) probabilities decoded by argmax (of the 18 classes, or of
    one attribute's)."""
    if metric == "log_loss":
        return -log_loss(y, probs)
    return float(metric_of_confusion(confusion_batch(y, probs.argmax(-1), probs.shape[-1]), metric)[0])


def decide_hard(votes: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Most-voted class (last axis); a tie goes to the class whose best supporter ranks higher."""
    top = votes >= votes.max(axis=-1, keepdims=True) - 1e-9
    return np.where(top, support, -1.0).argmax(axis=-1)


def vote_support(votes: np.ndarray, bonus: np.ndarray) -> np.ndarray:
    """(M, N, C) one-hot votes -> (N, C) bonus of the best model voting for each class."""
    return (votes * np.asarray(bonus, np.float32)[:, None, None]).max(axis=0)


def one_hot_votes(logits: np.ndarray) -> np.ndarray:
    """(M, N, C) logits -> (M, N, C) float32 one-hot of each model's argmax."""
    return (logits.argmax(-1)[..., None] == np.arange(logits.shape[-1])).astype(np.float32)


def rank_bonus(gains: np.ndarray) -> np.ndarray:
    """Tie-break value per model in (0, 1): larger for the better model (first wins ties)."""
    order = np.argsort(-np.asarray(gains), kind="stable")
    bonus = np.empty(len(order))
    bonus[order] = (len(order) - np.arange(len(order))) / (len(order) + 1)
    return bonus


@dataclass(frozen=True)
class Selection:
    counts: np.ndarray  # (M,) times each model was picked, up to the best round
    trajectory: np.ndarray  # gain after each round, all rounds

    @property
    def weights(self) -> np.ndarray:
        return self.counts / self.counts.sum()


def select_greedy(members: np.ndarray, y: np.ndarray, rounds: int, metric: Metric,
                  bonus: np.ndarray | None = None, start: tuple[int, ...] = ()) -> Selection:
    """Greedy forward selection with replacement (Caruana et al. 2004), as AutoGluon does.

    `members` is (M, N, C): probabilities for a soft vote, or one-hot votes with `bonus`
    (see rank_bonus) for a hard vote; C is 18, or one attribute's classes. The models in `start` are in from the outset. Each
    round adds the model whose addition scores best (ties: a model already in, then the
    lower index); the rounds up to the best are kept.
    """
    members = np.ascontiguousarray(members)  # row gathers below are slow on strided views
    total = np.zeros(members.shape[1:], np.float32)
    support = np.zeros(members.shape[1:], np.float32)
    counts = np.zeros(len(members), np.int64)
    order, trajectory = list(start), []
    for best in start:
        _add(members, best, total, support, bonus)
    counts[list(start)] += 1
    rows = np.arange(len(y))
    true = members[:, rows, y] if metric == "log_loss" else None
    swing = None if metric == "log_loss" else _max_swing(members)
    for _ in range(rounds):
        if metric == "log_loss":
            gains = -_candidate_log_loss(true, total[rows, y], len(order))
        else:
            gains = _candidate_decision_gains(members, total, support, y, metric, bonus, swing)
        best = _pick(gains, counts)
        _add(members, best, total, support, bonus)
        counts[best] += 1
        order.append(best)
        trajectory.append(gains[best])
    trajectory = np.asarray(trajectory)
    keep = len(start) + int(np.flatnonzero(trajectory >= trajectory.max() - TIE)[0]) + 1
    return Selection(np.bincount(order[:keep], minlength=len(members)), trajectory)


def _add(members, best, total, support, bonus) -> None:
    total += members[best]
    if bonus is not None:
        np.maximum(support, members[best] * np.float32(bonus[best]), out=support)


def _pick(gains: np.ndarray, counts: np.ndarray) -> int:
    tied = gains >= gains.max() - TIE
    used = tied & (counts > 0)
    return int(np.flatnonzero(used if used.any() else tied)[0])


def _candidate_log_loss(true: np.ndarray, total_true: np.ndarray, members_in: int) -> np.ndarray:
    blended = (true + total_true[None]) / (members_in + 1)
    return -np.log(np.maximum(blended, PROB_FLOOR)).mean(axis=1)


def _max_swing(members: np.ndarray) -> np.ndarray:
    """(N, C): most that adding any one member can gain any class over class c, per row."""
    best = members.max(axis=0)
    ranked = np.partition(best, members.shape[-1] - 2, axis=1)
    top_other = np.where(best == ranked[:, -1:], ranked[:, -2:-1], ranked[:, -1:])  # max over other classes
    return top_other - members.min(axis=0)


def _candidate_decision_gains(members, total, support, y, metric, bonus, swing) -> np.ndarray:
    # A row whose leader is ahead by more than any one member can swing keeps its decision
    # whichever model joins; only the undecided rest is scored per candidate.
    lead, c = total.argmax(axis=1), total.shape[-1]
    ranked = np.partition(total, c - 2, axis=1)
    settled = ranked[:, -1] - ranked[:, -2] > swing[np.arange(len(y)), lead] + SLACK
    fixed = confusion_batch(y[settled], lead[settled][None], c)[0]
    open_ = np.flatnonzero(~settled)
    sub = members if len(open_) == len(y) else np.take(members, open_, axis=1)
    votes = sub + total[open_][None]
    if bonus is None:
        preds = votes.argmax(axis=-1)
    else:
        mine = sub * np.asarray(bonus, np.float32)[:, None, None]
        preds = decide_hard(votes, np.maximum(support[open_][None], mine))
    return metric_of_confusion(confusion_batch(y[open_], preds, c) + fixed, metric)


def refine_weights(probs: np.ndarray, y: np.ndarray, weights: np.ndarray, metric: Metric,
                   max_evals: int = 300) -> np.ndarray:
    """Nelder-Mead on the simplex of the models `weights` uses, started from `weights`.

    Softmax parameters keep the weights on the simplex; the metric is piecewise constant,
    so a derivative-free method is the one that can move at all.
    """
    used = np.flatnonzero(weights > 0)
    if len(used) < 2:
        return weights
    sub = probs[used]

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        return -score_probs(y, blend_probs(sub, w / w.sum()), metric)

    start = np.log(weights[used])
    simplex = np.vstack([start, start + 0.5 * np.eye(len(used))])
    result = minimize(loss, start, method="Nelder-Mead",
                      options={"initial_simplex": simplex, "maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-9})
    if result.fun >= loss(start):
        return weights
    w = np.exp(result.x - result.x.max())
    refined = np.zeros_like(weights, dtype=float)
    refined[used] = w / w.sum()
    return refined


def fit_temperatures(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-model temperature minimising that model's own log loss (temperature scaling)."""
    rows = np.arange(len(y))

    def nll(log_t: float, z: np.ndarray) -> float:
        s = z / np.exp(log_t)
        top = s.max(axis=1)
        lse = top + np.log(np.exp(s - top[:, None]).sum(axis=1))
        return float((lse - s[rows, y]).mean())

    return np.array([np.exp(minimize_scalar(nll, bounds=(-3, 3), args=(z.astype(np.float64),),
                                            method="bounded").x) for z in logits])


def decode_scores(probs: np.ndarray, decode: Decode) -> list[np.ndarray]:
    """Log-scores per decision group: the 18 classes, or mask, gender and age apart."""
    if decode == "joint":
        return [np.log(np.maximum(probs, PROB_FLOOR))]
    cube = probs.reshape(len(probs), 3, 2, 3)
    marginals = [cube.sum((2, 3)), cube.sum((1, 3)), cube.sum((1, 2))]
    return [np.log(np.maximum(p, PROB_FLOOR)) for p in marginals]


def compose(decode: Decode, group_preds: list[np.ndarray]) -> np.ndarray:
    return group_preds[0] if decode == "joint" else class_of(*group_preds)


def no_offsets(decode: Decode) -> tuple[np.ndarray, ...]:
    return (np.zeros(C),) if decode == "joint" else (np.zeros(3), np.zeros(2), np.zeros(3))


def decide(probs: np.ndarray, decode: Decode, offsets: tuple[np.ndarray, ...]) -> np.ndarray:
    """Labels of (N, C) probabilities: argmax of each group's log-score plus its offsets."""
    return decide_groups(decode_scores(probs, decode), decode, offsets)


def decide_groups(groups: list[np.ndarray], decode: Decode, offsets: tuple[np.ndarray, ...]) -> np.ndarray:
    """Labels from each decision group's (N, C_g) log-scores plus its offsets."""
    return compose(decode, [(s + b).argmax(axis=1) for s, b in zip(groups, offsets)])


def fit_offsets(probs: np.ndarray, y: np.ndarray, decode: Decode, metric: Metric,
                passes: int = 2) -> tuple[np.ndarray, ...]:
    """Per-class log-score offsets of the blended (N, 18) probabilities (fit_group_offsets)."""
    return fit_group_offsets(decode_scores(probs, decode), y, decode, metric, passes)


def fit_group_offsets(groups: list[np.ndarray], y: np.ndarray, decode: Decode, metric: Metric,
                      passes: int = 2) -> tuple[np.ndarray, ...]:
    """Per-class log-score offsets by coordinate ascent on the metric of the 18-class labels.

    Each step tries every grid value for one class's offset at once: the class wins a row
    when its score plus the value beats the best other class of its group.
    """
    offsets = [b.copy() for b in no_offsets(decode)]
    preds = [(s + b).argmax(axis=1) for s, b in zip(groups, offsets)]
    current = metric_of_confusion(confusion_batch(y, compose(decode, preds)), metric)[0]
    for _ in range(passes):
        for g, scores in enumerate(groups):
            for c in range(scores.shape[1]):
                shifted = scores + offsets[g]
                shifted[:, c] = -np.inf
                rival, rival_arg = shifted.max(axis=1), shifted.argmax(axis=1)
                wins = scores[None, :, c] + OFFSET_GRID[:, None] > rival[None, :]
                trial = [np.broadcast_to(p, wins.shape) for p in preds]
                trial[g] = np.where(wins, c, rival_arg[None, :])
                gains = metric_of_confusion(confusion_batch(y, compose(decode, trial)), metric)
                best = int(np.argmax(gains))
                if gains[best] > current + TIE:
                    current, offsets[g][c] = gains[best], OFFSET_GRID[best]
                    preds[g] = trial[g][best]
    return tuple(offsets)
