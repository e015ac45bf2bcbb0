"""The vectorised blending methods against plain references and known answers."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import log_loss as sk_log_loss

from benchmarks.bench_blend import select_greedy_loop
from orchestrator.analysis.ensembles import methods as ens
from tasks.labels import NUM_CLASSES, class_of
from tests.helpers.fake_logits import make_targets, model_logits


def test_macro_f1_and_accuracy_from_bincounts_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 2, 5, 9, 17], size=400)  # most classes absent from the truth
    preds = np.stack([rng.choice([0, 1, 2, 3, 5, 9], size=400) for _ in range(6)])  # 3 predicted, never true
    preds[0] = y  # perfect
    conf = ens.confusion_batch(y, preds)
    f1 = ens.metric_of_confusion(conf, "macro_f1")
    acc = ens.metric_of_confusion(conf, "accuracy")
    for b, p in enumerate(preds):
        assert f1[b] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)
        assert acc[b] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    assert f1[0] == 1.0


def _models(n_rows: int, strengths, seed: int = 0, shared: float = 0.7):
    y = make_targets(n_rows, seed)
    common = np.random.default_rng(seed).standard_normal((n_rows, NUM_CLASSES))
    logits = np.stack([model_logits(y, seed + 1 + i, s, shared=shared * common) for i, s in enumerate(strengths)])
    return logits, y


STRENGTHS = [(3, 2.5, 1.2), (2.5, 3, 1.4), (3.5, 2, 1.0), (2, 2, 1.8), (3, 3, 0.8), (2.8, 2.2, 1.3)]


@pytest.mark.parametrize("rounds", [1, 7, 30])
def test_greedy_picks_the_same_weights_as_a_plain_sklearn_loop(rounds):
    logits, y = _models(700, STRENGTHS)
    probs = ens.softmax(logits)
    fast = ens.select_greedy(probs, y, rounds, "macro_f1")
    assert np.array_equal(fast.counts, select_greedy_loop(probs, y, rounds))
    blended = ens.blend_probs(probs, fast.weights)
    assert fast.trajectory.max() == pytest.approx(f1_score(y, blended.argmax(1), average="macro"), abs=1e-6)


def _plain_hard_vote(model_preds: np.ndarray, counts: np.ndarray, bonus: np.ndarray) -> np.ndarray:
    out = []
    for row in model_preds.T:
        tally, best_voter = Counter(), {}
        for m, c in enumerate(row):
            if counts[m]:
                tally[c] += counts[m]
                best_voter[c] = max(best_voter.get(c, -1), bonus[m])
        top = max(tally.values())
        out.append(max((c for c in tally if tally[c] == top), key=lambda c: best_voter[c]))
    return np.array(out)


def test_weighted_hard_vote_greedy_matches_a_plain_per_row_vote():
    logits, y = _models(250, STRENGTHS, seed=3)
    preds = logits.argmax(-1)
    gains = np.array([f1_score(y, p, average="macro") for p in preds])
    bonus = ens.rank_bonus(gains)
    selection = ens.select_greedy(ens.one_hot_votes(logits), y, 8, "macro_f1", bonus, start=(0, 1, 2))
    # Replay: each round's gain must be that of the plain vote of the models picked so far.
    counts = np.zeros(len(logits), int)
    counts[[0, 1, 2]] = 1
    best = max(f1_score(y, _plain_hard_vote(preds, counts + np.eye(len(logits), dtype=int)[m], bonus),
                        average="macro") for m in range(len(logits)))
    assert selection.trajectory[0] == pytest.approx(best, abs=1e-12)
    final = _plain_hard_vote(preds, selection.counts, bonus)
    assert f1_score(y, final, average="macro") == pytest.approx(selection.trajectory.max(), abs=1e-12)


def test_hard_vote_tie_goes_to_the_better_model():
    votes = ens.one_hot_votes(np.array([[[0, 5.0] + [0] * 16], [[5.0, 0] + [0] * 16]], np.float32))
    for better, expected in ((0, 1), (1, 0)):
        bonus = ens.rank_bonus(np.array([1.0, 0.0]) if better == 0 else np.array([0.0, 1.0]))
        total = votes.sum(0)
        assert ens.decide_hard(total, ens.vote_support(votes, bonus))[0] == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_pure_noise_model_gets_about_no_weight_at_competition_scale(seed):
    logits, y = _models(18_900, STRENGTHS[:3], seed=seed)
    noise = 3.0 * np.random.default_rng(seed).standard_normal(logits.shape[1:])  # confident, uninformed
    probs = ens.softmax(np.concatenate([logits, noise[None].astype(np.float32)]))
    selection = ens.select_greedy(probs, y, 30, "macro_f1")
    assert selection.weights[3] <= 0.05
    assert selection.counts[:3].min() > 0


def test_complementary_models_blend_beats_both_on_held_out_rows():
    y = make_targets(4000, 5)
    sees_mask_gender = model_logits(y, 11, strength=(3.0, 3.0, 0.3))
    sees_age = model_logits(y, 12, strength=(0.6, 0.6, 3.0))
    probs = ens.softmax(np.stack([sees_mask_gender, sees_age]))
    fit, held = slice(0, 2000), slice(2000, None)
    weights = ens.select_greedy(probs[:, fit], y[fit], 20, "macro_f1").weights
    blend = f1_score(y[held], ens.blend_probs(probs[:, held], weights).argmax(1), average="macro")
    singles = [f1_score(y[held], p[held].argmax(1), average="macro") for p in probs]
    assert weights.min() > 0
    assert blend > max(singles) + 0.1


def test_class_offsets_recover_a_suppressed_rare_class():
    y = make_targets(6000, 7)
    logits = model_logits(y, 21, strength=(3, 3, 2.5))
    old = np.arange(NUM_CLASSES) % 3 == 2
    logits[:, old] -= 2.0  # the model under-predicts the >=60 classes, as a CE model does
    probs = ens.softmax(logits)
    offsets = ens.fit_offsets(probs[:3000], y[:3000], "joint", "macro_f1")
    before = f1_score(y[3000:], probs[3000:].argmax(1), average="macro")
    after = f1_score(y[3000:], ens.decide(probs[3000:], "joint", offsets), average="macro")
    assert after > before + 0.05
    assert offsets[0][old].mean() > offsets[0][~old].mean() + 1.0


def test_per_attribute_decoding_differs_from_joint_argmax_where_the_marginal_says_so():
    probs = np.zeros((1, NUM_CLASSES), np.float32)
    probs[0, class_of(0, 0, 0)] = 0.30  # the single most likely class: mask worn
    probs[0, class_of(2, 0, 0)] = 0.25  # but "not worn" holds more mass over two classes
    probs[0, class_of(2, 0, 1)] = 0.25
    probs[0, class_of(0, 1, 0)] = 0.15
    probs[0, class_of(1, 0, 0)] = 0.05
    assert ens.decide(probs, "joint", ens.no_offsets("joint"))[0] == class_of(0, 0, 0)
    assert ens.decide(probs, "per_attribute", ens.no_offsets("per_attribute"))[0] == class_of(2, 0, 0)


def test_temperature_scaling_recovers_an_overconfident_scale():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((20000, NUM_CLASSES)) * 1.5
    p = ens.softmax(z).astype(np.float64)
    y = (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)  # labels drawn from the calibrated z
    temps = ens.fit_temperatures(np.stack([3 * z, z]).astype(np.float32), y)
    assert temps[0] == pytest.approx(3.0, rel=0.1)
    assert temps[1] == pytest.approx(1.0, rel=0.1)


def test_refinement_never_loses_in_sample_and_stays_on_the_simplex():
    logits, y = _models(1500, STRENGTHS, seed=9)
    probs = ens.softmax(logits)
    greedy = ens.select_greedy(probs, y, 10, "macro_f1").weights
    refined = ens.refine_weights(probs, y, greedy, "macro_f1")
    assert refined.sum() == pytest.approx(1.0)
    assert (refined[greedy == 0] == 0).all()
    assert ens.score_probs(y, ens.blend_probs(probs, refined), "macro_f1") >= \
        ens.score_probs(y, ens.blend_probs(probs, greedy), "macro_f1")


def test_log_loss_greedy_trajectory_is_sklearn_log_loss_of_the_kept_blend():
    logits, y = _models(800, STRENGTHS, seed=2)
    probs = ens.softmax(logits)
    selection = ens.select_greedy(probs, y, 12, "log_loss")
    loss = sk_log_loss(y, ens.blend_probs(probs, selection.weights), labels=range(NUM_CLASSES))
    assert -selection.trajectory.max() == pytest.approx(loss, rel=1e-4)
