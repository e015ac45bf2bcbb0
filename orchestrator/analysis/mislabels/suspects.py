"""How sure the audit is: per person, the probability that a given label is wrong.

"Another label has more evidence" flags dozens of people when the models are weak, so each
person gets p_wrong, a probability, and is a suspect only when p_wrong > cut (default 0.5:
more likely wrong than right). Per attribute, three corrections keep p_wrong honest:

1. Image calibration: the hypotheses' per-image OOF log-probabilities get a temperature
   and a bias fitted to the given labels (nearly all right, so the few errors hardly move
   the fit); overconfident probabilities would multiply into certainty over seven photos.
2. Naive Bayes over a person's images: evidence for hypothesis h is the sum over images of
   log p_i(h) - log prior_h, so the class prior each probability carries counts once, not
   seven times (it would otherwise make every old-age label look wrong).
3. Seven photos of one face are not seven independent witnesses: the evidence is scaled by
   the design effect 1 / (1 + (m - 1) rho), rho the intraclass correlation of the images'
   log-ratios within people of the same given label (robust to the errors themselves).

Then Bayes with a label-error rate e (prior: a label is wrong with probability e, then any
other hypothesis alike): P(true h | images, given g) ~ prior_h exp(evidence_h) (1 - e if
h == g else e / (H - 1)), and p_wrong = 1 - P(true g | ...). Among the suspects,
sum(1 - p_wrong) is the number of false alarms to expect.

The cut is safe and shy: small or weak models rarely make anyone more likely wrong than
right, yet their top few hold most of the real errors. So a second tier, "worth a look",
takes the next people in the ranking (review_size of them) whose p_wrong is above the prior
e: photos to look at, never relabelled automatically; sum(p_wrong) over them is how many
wrong labels to expect there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_softmax

from orchestrator.analysis.ensembles.methods import PROB_FLOOR

ERROR_RATE = 0.01
CUT = 0.5
TEMPERATURES = (0.05, 20.0)  # search range of the image temperature
# The "worth a look" tier: twice the errors the prior expects per attribute (room for the
# errors the models rank a little low), and at least a handful even on a small set.
REVIEW_FACTOR = 2
REVIEW_MIN = 5


@dataclass(frozen=True)
class Hypotheses:
    """Per-image probability of each hypothesis about one attribute of each person."""
    attribute: str
    people: np.ndarray  # (P,) person keys
    codes: np.ndarray  # (n,) index into `people` of each image row
    probs: np.ndarray  # (n, H)
    given: np.ndarray  # (P,) index of the hypothesis the given labels state
    # False when every hypothesis puts the same states on a person's images (the mask swap
    # check), so the class prior cancels and is not divided out.
    carries_prior: bool = True


@dataclass(frozen=True)
class Calibration:
    temperature: float  # per-image temperature of the hypotheses' log-probabilities
    correlation: float  # rho: intraclass correlation of a person's images
    images: float  # mean images per person
    error_rate: float

    @property
    def effective_images(self) -> float:
        """How many independent images a person's images are worth."""
        return self.images / (1 + (self.images - 1) * self.correlation)


@dataclass(frozen=True)
class Assessment:
    attribute: str
    people: np.ndarray  # (P,) likeliest wrong first
    score: np.ndarray  # (P,) geometric mean of the given label's per-image probability
    p_wrong: np.ndarray  # (P,) probability that the given label is wrong
    given: np.ndarray  # (P,) hypothesis index
    suggested: np.ndarray  # (P,) the likeliest hypothesis other than the given one
    suspect: np.ndarray  # (P,) p_wrong > cut
    calibration: Calibration
    review: np.ndarray  # (P,) "worth a look": the next review_size non-suspects with p_wrong > the prior
    cut: float = CUT

    @property
    def expected_false_alarms(self) -> float:
        return float((1 - self.p_wrong[self.suspect]).sum())

    @property
    def expected_in_review(self) -> float:
        """Wrong labels to expect among the people worth a look."""
        return float(self.p_wrong[self.review].sum())

    @property
    def tier(self) -> np.ndarray:
        """(P,) 'suspect', 'review' or '' (the rest)."""
        return np.where(self.suspect, "suspect", np.where(self.review, "review", ""))


def review_size(people: int, error_rate: float) -> int:
    """How many people past the suspects are worth a look: REVIEW_FACTOR times the label
    errors the prior expects, at least REVIEW_MIN (and never more than there are)."""
    return min(people, max(REVIEW_MIN, math.ceil(REVIEW_FACTOR * error_rate * people - 1e-9)))


def review_tier(p_wrong: np.ndarray, suspect: np.ndarray, size: int, floor: float) -> np.ndarray:
    """(P,) the first `size` non-suspects of a ranking (p_wrong descending) whose p_wrong is
    above `floor` (the prior: below it the photos back the given label)."""
    candidates = np.flatnonzero(~suspect & (p_wrong > floor))[:size]
    out = np.zeros(len(p_wrong), bool)
    out[candidates] = True
    return out


def calibrate_images(logs: np.ndarray, labels: np.ndarray, bias: bool) -> tuple[float, np.ndarray]:
    """Temperature (and per-hypothesis bias) that make per-image probabilities fit the given
    labels best. The bias makes the mean calibrated probability the label frequency, so the
    prior the probabilities carry is known; without it (the swap check, where every given
    label is "as named") only the scale is fitted."""
    hyps = logs.shape[1]
    onehot = np.eye(hyps)[labels]

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood and its gradient in (log temperature, bias[1:])."""
        scaled = logs / np.exp(theta[0])
        log_p = log_softmax(scaled + (np.concatenate([[0.0], theta[1:]]) if bias else 0.0), axis=1)
        residual = (np.exp(log_p) - onehot) / len(labels)
        grad = [-(residual * scaled).sum()] + (list(residual.sum(0)[1:]) if bias else [])
        return float(-(log_p * onehot).sum() / len(labels)), np.array(grad)

    start = np.zeros(hyps if bias else 1)
    bounds = [tuple(np.log(TEMPERATURES))] + [(-20.0, 20.0)] * (len(start) - 1)
    theta = minimize(nll, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    return float(np.exp(theta[0])), np.concatenate([[0.0], theta[1:]]) if bias else np.zeros(hyps)


def image_correlation(h: Hypotheses, logs: np.ndarray) -> float:
    """One-way ANOVA intraclass correlation of per-image log-ratios (each hypothesis against
    the first), people grouped by given label. The between-person variance is taken from
    the median absolute deviation of person means: a mislabelled person's far-off mean is
    an error to find, not a sign that a person's images agree."""
    counts = np.bincount(h.codes, minlength=len(h.people))
    rhos = []
    for j in range(1, logs.shape[1]):
        ratio = logs[:, j] - logs[:, 0]
        means = np.bincount(h.codes, ratio, len(h.people)) / counts
        within = np.bincount(h.codes, (ratio - means[h.codes]) ** 2).sum() / max(len(ratio) - len(h.people), 1)
        centre = {g: np.median(means[h.given == g]) for g in np.unique(h.given)}
        spread = 1.4826 * np.median(np.abs(means - np.array([centre[g] for g in h.given])))
        between = max(spread ** 2 - within / counts.mean(), 0.0)
        rhos.append(between / (between + within) if between + within > 0 else 0.0)
    return float(np.mean(rhos))


def posterior(h: Hypotheses, error_rate: float) -> tuple[np.ndarray, Calibration]:
    """(P, H) probability of each hypothesis being the truth, given the images and the label."""
    people, hyps = len(h.people), h.probs.shape[1]
    raw = np.log(np.maximum(h.probs, PROB_FLOOR))
    temperature, bias = calibrate_images(raw, h.given[h.codes], h.carries_prior)
    logs = log_softmax(raw / temperature + bias, axis=1)
    log_prior = np.log(np.exp(logs).mean(0)) if h.carries_prior else np.full(hyps, -np.log(hyps))
    counts = np.bincount(h.codes, minlength=people)
    rho = image_correlation(h, logs)
    evidence = np.stack([np.bincount(h.codes, logs[:, j] - log_prior[j], people) for j in range(hyps)], 1)
    design = (1 / (1 + (counts - 1) * rho))[:, None]
    label = np.full((people, hyps), np.log(error_rate / (hyps - 1)))
    label[np.arange(people), h.given] = np.log(1 - error_rate)
    post = np.exp(log_softmax(log_prior + design * evidence + label, axis=1))
    return post, Calibration(temperature, rho, float(counts.mean()), error_rate)


def assess(h: Hypotheses, error_rate: float = ERROR_RATE, cut: float = CUT) -> Assessment:
    """p_wrong of every person's given label, likeliest wrong first, and who is a suspect."""
    post, calibration = posterior(h, error_rate)
    rows = np.arange(len(h.people))
    p_wrong = np.clip(1 - post[rows, h.given], 0.0, 1.0)
    others = np.where(np.arange(post.shape[1])[None] == h.given[:, None], -1.0, post)
    given_raw = np.log(np.maximum(h.probs[np.arange(len(h.codes)), h.given[h.codes]], PROB_FLOOR))
    score = np.exp(np.bincount(h.codes, given_raw, len(rows)) / np.bincount(h.codes, minlength=len(rows)))
    order = np.lexsort((score, -p_wrong))
    suspect = p_wrong[order] > cut
    review = review_tier(p_wrong[order], suspect, review_size(len(rows), error_rate), error_rate)
    return Assessment(h.attribute, h.people[order], score[order], p_wrong[order], h.given[order],
                      others.argmax(1)[order], suspect, calibration, review, cut)


# The order people are listed in: gender and age mistakes first, the ones a reviewer checks fastest.
AUDIT_ORDER = ("gender", "age", "mask")


def pick_suspects(table: pd.DataFrame, per_attribute: int) -> pd.DataFrame:
    """One row per person and attribute to show.

    The newer audit.csv ranks everyone and marks suspects in a `suspect` column; the older
    one lists only contradicted people (two rows for a mask swap), so its top few are shown.
    """
    if "suspect" in table.columns:
        flags = table.suspect.astype(str).str.strip().str.lower().isin(("true", "1"))
        chosen = table[flags].drop_duplicates(["person", "attribute"])
    else:
        chosen = table.drop_duplicates(["person", "attribute"]).sort_values("rank", kind="stable")
        chosen = chosen.groupby("attribute", sort=False).head(per_attribute)
    return _in_audit_order(chosen)


def pick_review(table: pd.DataFrame, per_attribute: int) -> pd.DataFrame:
    """The "worth a look" tier (audit.csv's tier column), at most `per_attribute` per attribute;
    empty for an audit.csv written before the tier existed."""
    if "tier" not in table.columns:
        return table.iloc[:0]
    chosen = table[table.tier.astype(str).str.strip() == "review"].drop_duplicates(["person", "attribute"])
    chosen = chosen.sort_values("rank", kind="stable").groupby("attribute", sort=False).head(per_attribute)
    return _in_audit_order(chosen)


def _in_audit_order(chosen: pd.DataFrame) -> pd.DataFrame:
    order = {a: i for i, a in enumerate(AUDIT_ORDER)}
    # Numbers whatever the CSV's dtypes: with no suspect the columns come back as empty strings.
    place = pd.to_numeric(chosen.attribute.map(order), errors="coerce").fillna(len(order))
    key = place * 1e6 + pd.to_numeric(chosen["rank"], errors="coerce").fillna(0)
    return chosen.assign(_key=key).sort_values("_key", kind="stable").drop(columns="_key")
