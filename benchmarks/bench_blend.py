"""Greedy ensemble selection on macro F1: vectorised vs a straightforward sklearn loop.

Competition scale: 35 models x 18,900 OOF rows x 18 classes. The straightforward loop
scores each candidate of each round with `sklearn.metrics.f1_score`; the vectorised one
(orchestrator.analysis.ensembles.methods.select_greedy) scores a whole round from one bincount and skips
rows whose decision no single added model can change. Both must pick the same weights.

    python -m benchmarks.bench_blend                 # 25 and 100 rounds, with the loop
    python -m benchmarks.bench_blend --no-loop       # vectorised only
    python -m benchmarks.bench_blend --full          # also a whole blend (all methods, nested)
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score

from orchestrator.analysis.ensembles import methods as ens
from tasks.labels import NUM_CLASSES


@dataclass(frozen=True)
class BenchData:
    logits: np.ndarray  # (M, N, C)
    target: np.ndarray  # (N,)


@dataclass(frozen=True)
class Timing:
    rounds: int
    vectorised_s: float
    loop_s: float | None
    same_weights: bool | None


def make_bench_data(n_models: int, n_rows: int, seed: int = 0) -> BenchData:
    """Models of varied skill whose errors correlate through a shared noise term."""
    from tests.helpers.fake_logits import make_targets, model_logits

    rng = np.random.default_rng(seed)
    target = make_targets(n_rows, seed)
    shared = rng.standard_normal((n_rows, NUM_CLASSES)).astype(np.float32)
    logits = [model_logits(target, seed=seed + 1 + m, strength=tuple(rng.uniform([3.0, 2.5, 1.4], [4.5, 4.0, 2.4])),
                           noise=1.0, shared=0.8 * shared) for m in range(n_models)]
    return BenchData(np.stack(logits), target)


def select_greedy_loop(probs: np.ndarray, y: np.ndarray, rounds: int) -> np.ndarray:
    """The same algorithm written plainly: one f1_score call per candidate per round."""
    total = np.zeros(probs.shape[1:], np.float32)
    counts = np.zeros(len(probs), np.int64)
    order, trajectory = [], []
    for _ in range(rounds):
        scores = np.array([f1_score(y, np.argmax(total + p, axis=1), average="macro") for p in probs])
        tied = scores >= scores.max() - ens.TIE
        used = tied & (counts > 0)
        best = int(np.flatnonzero(used if used.any() else tied)[0])
        total += probs[best]
        counts[best] += 1
        order.append(best)
        trajectory.append(scores[best])
    keep = int(np.flatnonzero(np.array(trajectory) >= max(trajectory) - ens.TIE)[0]) + 1
    return np.bincount(order[:keep], minlength=len(probs))


def time_rounds(data: BenchData, rounds: int, with_loop: bool) -> Timing:
    probs = ens.softmax(data.logits)
    start = time.perf_counter()
    fast = ens.select_greedy(probs, data.target, rounds, "macro_f1")
    fast_s = time.perf_counter() - start
    if not with_loop:
        return Timing(rounds, fast_s, None, None)
    start = time.perf_counter()
    slow = select_greedy_loop(probs, data.target, rounds)
    return Timing(rounds, fast_s, time.perf_counter() - start, bool(np.array_equal(fast.counts, slow)))


def time_full_blend(data: BenchData, n_splits: int = 5) -> float:
    """Every planned method fitted in the nested folds and on all rows (default BlendSpec)."""
    from orchestrator.analysis.ensembles import fit_all, plan_recipes, predict_nested
    from tasks.spec.experiment import BlendSpec

    spec = BlendSpec()
    fold = np.random.default_rng(1).permutation(len(data.target)) % n_splits
    start = time.perf_counter()
    recipes = plan_recipes(spec)
    predict_nested(recipes, data.logits, data.target, fold, spec)
    fit_all(recipes, data.logits, data.target, spec)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=35)
    parser.add_argument("--rows", type=int, default=18_900)
    parser.add_argument("--rounds", type=int, nargs="+", default=[25, 100])
    parser.add_argument("--no-loop", action="store_true", help="skip the slow sklearn loop")
    parser.add_argument("--full", action="store_true", help="also time a whole nested blend")
    args = parser.parse_args()
    data = make_bench_data(args.models, args.rows)
    print(f"{args.models} models x {args.rows} rows x {NUM_CLASSES} classes, metric macro_f1")
    print("| rounds | vectorised (s) | sklearn loop (s) | speed-up | same weights |")
    print("|---:|---:|---:|---:|:---:|")
    for rounds in args.rounds:
        t = time_rounds(data, rounds, not args.no_loop)
        loop = "-" if t.loop_s is None else f"{t.loop_s:.1f}"
        speed = "-" if t.loop_s is None else f"{t.loop_s / t.vectorised_s:.0f}x"
        same = "-" if t.same_weights is None else ("yes" if t.same_weights else "NO")
        print(f"| {rounds} | {t.vectorised_s:.2f} | {loop} | {speed} | {same} |", flush=True)
    if args.full:
        print(f"whole blend (default BlendSpec, 5 nested folds + all rows): {time_full_blend(data):.1f}s")


if __name__ == "__main__":
    main()
