"""Person-level bootstrap intervals: right values, honest widths, exact pairing."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from orchestrator.analysis.ensembles.uncertainty import PersonBootstrap, paired_person_bootstrap, person_bootstrap
from tasks.labels import NUM_CLASSES


def _people(n_people: int, seed: int = 0, photos: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """target, predictions, person: each person's photos share a class mix and are all right or
    all wrong together (a person the model misjudges, as in the competition's age errors)."""
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(n_people), photos)
    base = rng.integers(0, NUM_CLASSES // 3, n_people)[person]
    target = base + (NUM_CLASSES // 3) * (np.arange(len(person)) % 3)
    wrong = (rng.random(n_people) < 0.3)[person]
    predicted = np.where(wrong, (target + 1) % NUM_CLASSES, target)
    return target, predicted, person.astype(str)


def test_resamples_are_whole_people_scored_like_sklearn():
    target, predicted, person = _people(40)
    boot = PersonBootstrap.draw(target, person, n=5, seed=3)
    values = boot.macro_f1s(predicted)
    people = np.unique(person)
    for b in range(5):
        drawn = np.repeat(people, boot.draws[b].astype(int))
        rows = np.concatenate([np.flatnonzero(person == p) for p in drawn])
        assert values[b] == pytest.approx(f1_score(target[rows], predicted[rows], average="macro"), abs=1e-9)


def test_interval_contains_the_point_estimate_which_is_sklearns_macro_f1():
    for seed in range(3):
        target, predicted, person = _people(150, seed)
        interval = person_bootstrap(target, predicted, person)
        assert interval.estimate == pytest.approx(f1_score(target, predicted, average="macro"))
        assert interval.low < interval.estimate < interval.high


def test_interval_shrinks_with_more_people():
    widths = {}
    for n in (150, 1200):
        interval = person_bootstrap(*_people(n, seed=1))
        widths[n] = interval.high - interval.low
    # Eight times the people: about sqrt(8) ~ 2.8 times narrower.
    assert widths[1200] < 0.5 * widths[150]


def test_a_persons_photos_move_together():
    target, predicted, person = _people(200, seed=2)
    alone = person_bootstrap(target, predicted, person)
    # Each person photographed twice as often adds no new people, so no precision ...
    twice = person_bootstrap(np.repeat(target, 2), np.repeat(predicted, 2), np.repeat(person, 2))
    assert (twice.low, twice.high) == pytest.approx((alone.low, alone.high), abs=1e-9)
    # ... while treating every photo as its own person would claim far more.
    photos = person_bootstrap(target, predicted, np.arange(len(target)))
    assert photos.high - photos.low < 0.6 * (alone.high - alone.low)


def test_paired_difference_of_a_method_with_itself_is_exactly_zero():
    target, predicted, person = _people(100)
    same = paired_person_bootstrap(target, predicted, predicted.copy(), person)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_paired_difference_uses_the_same_people_for_both():
    target, predicted, person = _people(300, seed=4)
    better = predicted.copy()
    # Fix 15 wrong people: a small but sure gain that separate intervals could not show.
    fixed = np.isin(person, np.unique(person[predicted != target])[:15])
    better[fixed] = target[fixed]
    a, b = person_bootstrap(target, better, person), person_bootstrap(target, predicted, person)
    assert a.low < b.high  # the two intervals overlap
    diff = paired_person_bootstrap(target, better, predicted, person)
    assert diff.estimate == pytest.approx(a.estimate - b.estimate)
    assert diff.low > 0


def test_interval_text_is_compact():
    target, predicted, person = _people(100)
    interval = person_bootstrap(target, predicted, person)
    assert interval.text() == f"{interval.estimate:.4f} [{interval.low:.3f}, {interval.high:.3f}]"
    diff = paired_person_bootstrap(target, predicted, np.roll(predicted, 7), person)
    assert diff.text(signed=True).startswith(("+", "-")) and " [" in diff.text(signed=True)
