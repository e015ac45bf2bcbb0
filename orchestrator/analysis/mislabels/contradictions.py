"""People whose given labels the OOF predictions contradict (CLI: `python -m orchestrator.audit`).

Per attribute, a person's evidence for a label is aggregated over their images with a
geometric mean of the per-image probabilities (a product of experts): seven fairly sure
images outweigh one confident mistake, which a minimum or a per-image vote cannot say.
Gender and age bands use all seven images; the mask check asks whether the
incorrect_mask and normal files look swapped. How sure each contradiction is (p_wrong, and
who is a suspect) is orchestrator.analysis.mislabels.suspects'; audit.csv ranks everyone,
audit_relabel.csv holds the suspects in the relabel-file format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.ensembles.fitting import BlendRecordError, FittedBlend
from orchestrator.analysis.ensembles.methods import PROB_FLOOR, blend_probs, model_probs
from orchestrator.analysis.mislabels.suspects import Assessment, Hypotheses
from orchestrator.analysis.results import OofLogits
from tasks.data.relabel import parse_age, read_relabel_table
from tasks.errors import UserError
from tasks.labels import AGE_NAMES, GENDER_NAMES, MASK_NAMES, TRUE_AGE_BORDERS, age_band, split_class
from tasks.log import Log, to_stdout

ATTRIBUTES = ("gender", "age", "mask")
AGGREGATES = ("geo", "min", "vote")
SWAP_STEMS = ("incorrect_mask", "normal")
# Mask-check hypotheses: the states the incorrect_mask and normal files show.
SWAPS = ((1, 2), (2, 1))
SWAP_NAMES = ("as named", "incorrect_mask and normal swapped")



class AuditError(UserError):
    """A truth-mislabels file the audit cannot score against."""


@dataclass(frozen=True)
class Ranking:
    attribute: str
    people: np.ndarray  # (P,) most contradicted first
    score: np.ndarray  # (P,) aggregated evidence for the given label, ascending
    given: np.ndarray  # (P,) hypothesis index
    suggested: np.ndarray  # (P,) hypothesis with the most evidence (the given one on a tie)


def image_probs(oof: OofLogits, weights_json: Path, log: Log = to_stdout) -> np.ndarray:
    """(N, 18) OOF probabilities: the blend's soft weights if it chose a soft vote, else equal."""
    weights, temps = np.full(len(oof.models), 1 / len(oof.models)), np.ones(len(oof.models))
    record = json.loads(weights_json.read_text()) if weights_json.is_file() else {}
    try:
        fitted = FittedBlend.from_record(record, oof.models)
    except BlendRecordError:
        fitted = None
    if fitted is not None and fitted.recipe.vote == "soft" and fitted.per_attribute is None:
        weights, temps = fitted.weights, fitted.temperatures
        log(f"audit: OOF probabilities blended with {weights_json}'s weights ({fitted.recipe.name})")
    else:
        # A blend of several experiments (blend --results A --results B) weighs models this one lacks;
        # a per-attribute blend weighs attribute specialists, whose logits the audit does not read.
        pooled = len(record.get("experiments") or []) > 1
        why = f" ({weights_json} blends several experiments' models)" if pooled else ""
        if not why and record.get("attribute_weights"):
            why = f" ({weights_json}'s {record.get('method')} weighs attribute specialists per attribute)"
        log(f"audit: OOF probabilities as an equal soft vote of {len(oof.models)} models{why}")
    return blend_probs(model_probs(oof.logits, temps), weights / weights.sum())


def hypotheses(oof: OofLogits, probs: np.ndarray) -> dict[str, Hypotheses]:
    cube = probs.reshape(len(probs), 3, 2, 3)
    mask, gender, band = split_class(oof.target)
    people, codes = np.unique(oof.person, return_inverse=True)
    first = np.unique(codes, return_index=True)[1]
    out = {"gender": Hypotheses("gender", people, codes, cube.sum((1, 3)), gender[first]),
           "age": Hypotheses("age", people, codes, cube.sum((1, 2)), band[first])}
    out["mask"] = _swap_hypotheses(oof, cube.sum((2, 3)), mask)
    return out


def _swap_hypotheses(oof: OofLogits, mask_probs: np.ndarray, mask: np.ndarray) -> Hypotheses:
    stems = pd.Series(oof.image_key).str.rpartition("/")[2].to_numpy()
    pair = pd.DataFrame({"person": oof.person, "stem": stems, "mask": mask, "row": np.arange(len(mask))})
    pair = pair[pair.stem.isin(SWAP_STEMS)].pivot(index="person", columns="stem").dropna()
    states = pair["mask"][list(SWAP_STEMS)].to_numpy(np.int64)
    given = np.array([SWAPS.index(tuple(s)) if tuple(s) in SWAPS else -1 for s in states], np.int64)
    keep = given >= 0  # a person relabelled to some other state has no swap question left
    rows = pair["row"][list(SWAP_STEMS)].to_numpy(np.int64)[keep]  # (P, 2) image rows
    # Column h: each of the two images' probability of the state hypothesis h gives it.
    probs = np.stack([mask_probs[rows, np.array(h)[None, :]].ravel() for h in SWAPS], axis=1)
    return Hypotheses("mask", pair.index.to_numpy()[keep], np.repeat(np.arange(keep.sum()), 2), probs, given[keep],
                      carries_prior=False)


def aggregate(h: Hypotheses, how: str) -> np.ndarray:
    """(P, H) evidence per person and hypothesis."""
    count = np.bincount(h.codes, minlength=len(h.people))[:, None]
    if how == "geo":
        logs = np.log(np.maximum(h.probs, PROB_FLOOR))
        return np.exp(np.stack([np.bincount(h.codes, logs[:, j], len(h.people)) for j in range(logs.shape[1])], 1)
                      / count)
    if how == "min":
        return pd.DataFrame(h.probs).groupby(h.codes).min().to_numpy()
    if how == "vote":
        won = h.probs.argmax(1)
        return np.stack([np.bincount(h.codes, won == j, len(h.people)) for j in range(h.probs.shape[1])], 1) / count
    raise ValueError(f"unknown aggregate {how!r}; expected one of {AGGREGATES}")


def rank(h: Hypotheses, how: str) -> Ranking:
    evidence = aggregate(h, how)
    rows = np.arange(len(h.people))
    score = evidence[rows, h.given]
    suggested = np.where(score >= evidence.max(1), h.given, evidence.argmax(1))
    order = np.argsort(score, kind="stable")
    return Ranking(h.attribute, h.people[order], score[order], h.given[order], suggested[order])


def suggested_age(given_band: int, band: int) -> int:
    """The age nearest the given band inside the suggested one: the smallest change that fixes it."""
    return TRUE_AGE_BORDERS[band - 1] if band > given_band else TRUE_AGE_BORDERS[band] - 1


def relabel_rows(r: Assessment, i: int) -> list[dict]:
    """Relabel-file rows (plus why) that would apply suggestion i of an assessment."""
    g, s = int(r.given[i]), int(r.suggested[i])
    common = {"attribute": r.attribute, "rank": i + 1, "score": round(float(r.score[i]), 5),
              "p_wrong": round(float(r.p_wrong[i]), 5)}
    if r.attribute == "gender":
        return [{"person": r.people[i], "field": "gender", "value": GENDER_NAMES[s],
                 "given": GENDER_NAMES[g], "suggested": GENDER_NAMES[s], **common}]
    if r.attribute == "age":
        return [{"person": r.people[i], "field": "age", "value": str(suggested_age(g, s)),
                 "given": AGE_NAMES[g], "suggested": AGE_NAMES[s], **common}]
    return [{"person": r.people[i], "field": stem, "value": MASK_NAMES[state], "given": SWAP_NAMES[g],
             "suggested": SWAP_NAMES[s], **common} for stem, state in zip(SWAP_STEMS, SWAPS[s])]


HYPOTHESIS_NAMES = {"gender": GENDER_NAMES, "age": AGE_NAMES, "mask": SWAP_NAMES}


def audit_table(assessments: dict[str, Assessment]) -> pd.DataFrame:
    """Everyone, per attribute, likeliest wrong label first: audit.csv."""
    frames = []
    for a in assessments.values():
        names = np.array(HYPOTHESIS_NAMES[a.attribute], dtype=object)
        frames.append(pd.DataFrame({"person": a.people, "attribute": a.attribute,
                                    "rank": np.arange(1, len(a.people) + 1), "score": a.score.round(5),
                                    "p_wrong": a.p_wrong.round(5), "given": names[a.given],
                                    "suggested": names[a.suggested], "suspect": a.suspect, "tier": a.tier}))
    return pd.concat(frames, ignore_index=True)


def relabel_table(assessments: dict[str, Assessment], top: int | None = None) -> pd.DataFrame:
    """The suspects' relabel rows (at most `top` people per attribute): audit_relabel.csv."""
    rows = [row for a in assessments.values() for i in np.flatnonzero(a.suspect)[:top] for row in relabel_rows(a, i)]
    columns = ["person", "field", "value", "attribute", "rank", "score", "p_wrong", "given", "suggested"]
    return pd.DataFrame(rows, columns=columns)


def read_true_mislabels(path: Path, h: dict[str, Hypotheses]) -> dict[str, set[str]]:
    """People per attribute whose labels a relabel file really changes (a band, not just an age)."""
    table = read_relabel_table(path)
    if len(table) and not table.person.isin(h["gender"].people).any():
        raise AuditError(f"{path}: none of its people are in the OOF rows; persons must be folder names "
                         f"like {h['gender'].people[0]}")
    given = {a: dict(zip(h[a].people, h[a].given)) for a in ("gender", "age")}
    truth: dict[str, set[str]] = {a: set() for a in ATTRIBUTES}
    for line, (person, field, value) in enumerate(table.iloc[:, :3].itertuples(index=False), start=2):
        if person not in given["gender"]:
            continue
        try:
            if field == "gender" and GENDER_NAMES.index(value) != given["gender"][person]:
                truth["gender"].add(person)
            elif field == "age" and age_band(parse_age(value)) != given["age"][person]:
                truth["age"].add(person)
            elif field not in ("gender", "age"):
                truth["mask"].add(person)
        except ValueError:
            raise AuditError(f"{path}:{line}: {value!r} is not a valid {field}") from None
    return truth


def precision_recall(rankings: dict[str, dict[str, Ranking]], truth: dict[str, set[str]]) -> pd.DataFrame:
    """Precision and recall of the top k of each ranking, for k around the true count."""
    rows = []
    for how, by_attribute in rankings.items():
        for attribute, r in by_attribute.items():
            true = truth[attribute]
            if not true:
                continue
            for k in sorted({len(true), 2 * len(true)} & set(range(1, len(r.people) + 1))):
                hits = len(set(r.people[:k]) & true)
                rows.append({"attribute": attribute, "aggregate": how, "k": k, "true": len(true),
                             "found": hits, "precision": hits / k, "recall": hits / len(true)})
    return pd.DataFrame(rows)


def precision_recall_at_cut(assessments: dict[str, Assessment], truth: dict[str, set[str]]) -> pd.DataFrame:
    """Precision and recall of the suspects, beside the false alarms the audit expected, and how
    many true mislabels the suspects and the "worth a look" tier hold together."""
    rows = []
    for attribute, a in assessments.items():
        suspects, true = set(a.people[a.suspect]), truth[attribute]
        review = set(a.people[a.review])
        if not (suspects or true):
            continue
        found = len(suspects & true)
        rows.append({"attribute": attribute, "suspects": len(suspects), "true": len(true), "found": found,
                     "precision": found / len(suspects) if suspects else float("nan"),
                     "recall": found / len(true) if true else float("nan"),
                     "false_alarms": len(suspects) - found, "expected_false_alarms": a.expected_false_alarms,
                     "review": len(review), "review_found": len(review & true),
                     "recall_with_review": len((suspects | review) & true) / len(true) if true else float("nan")})
    return pd.DataFrame(rows)
