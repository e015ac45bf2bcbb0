"""Synthetic people and logits with known structure, written as a real results folder.

A model's logit for class c rewards each attribute c shares with the true label (mask,
gender, age band apart, so errors fall on the weak attribute as in the competition),
plus Gaussian noise; a shared noise term makes models' errors correlate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tasks.data.folds import save_folds
from tasks.labels import (
    ATTRIBUTE_SIZES,
    ATTRIBUTES,
    GENDER_NAMES,
    MASK_STEMS,
    NUM_CLASSES,
    age_band,
    class_of,
    mask_of_stem,
    split_class,
    target_labels,
)
from tasks.logits import LogitsMeta, gathered_name, logits_table, read_logits, write_logits
from tasks.spec.experiment import Experiment

CLASS_MASK, CLASS_GENDER, CLASS_AGE = split_class(np.arange(NUM_CLASSES))


def make_people(n_people: int, n_splits: int = 5, seed: int = 0) -> pd.DataFrame:
    """One row per training image: person, image_key, fold, target, gender, age."""
    rng = np.random.default_rng(seed)
    female = rng.random(n_people) < 0.6
    age = np.where(rng.random(n_people) < 0.15, 60, rng.integers(18, 60, n_people))
    fold = rng.permutation(n_people) % n_splits
    rows = []
    for i in range(n_people):
        person = f"{i:06d}_{'female' if female[i] else 'male'}_Asian_{age[i]}"
        for stem in MASK_STEMS:
            rows.append({"person": person, "image_key": f"{person}/{stem}", "fold": fold[i],
                         "gender": int(female[i]), "age": int(age[i]),
                         "target": int(class_of(mask_of_stem(stem), int(female[i]), age_band(age[i])))})
    return pd.DataFrame(rows)


def make_targets(n: int, seed: int = 1) -> np.ndarray:
    """Eval labels with the competition's imbalance: the >=60 classes rare."""
    rng = np.random.default_rng(seed)
    weights = np.where(CLASS_AGE == 2, 0.3, 1.0) * np.where(CLASS_MASK == 0, 5.0, 1.0)
    return rng.choice(NUM_CLASSES, size=n, p=weights / weights.sum())


def model_logits(target: np.ndarray, seed: int, strength=(3.0, 2.5, 1.2), noise: float = 1.0,
                 shared: np.ndarray | None = None) -> np.ndarray:
    """(N, 18) logits; `strength` is how well the model sees mask, gender and age."""
    rng = np.random.default_rng(seed)
    mask, gender, band = split_class(np.asarray(target))
    logits = (strength[0] * (CLASS_MASK[None] == mask[:, None])
              + strength[1] * (CLASS_GENDER[None] == gender[:, None])
              + strength[2] * (CLASS_AGE[None] == band[:, None])
              + noise * rng.standard_normal((len(target), NUM_CLASSES)))
    return (logits if shared is None else logits + shared).astype(np.float32)


def fold_model_logits(target: np.ndarray, seed: int, n_splits: int, **kw) -> np.ndarray:
    """(K, N, 18): fold models of one backbone err mostly alike (most noise is shared)."""
    base = model_logits(target, seed, **kw)
    rng = np.random.default_rng(seed + 1)
    jitter = 0.4 * kw.get("noise", 1.0) * rng.standard_normal((n_splits, *base.shape))
    return (0.9 * base[None] + jitter).astype(np.float32)


def eval_ids(n: int) -> np.ndarray:
    return np.array([f"{i * 7919:040x}.jpg" for i in range(n)], dtype=object)


def oof_frame(people: pd.DataFrame, model: str, experiment: str = "exp") -> pd.DataFrame:
    return pd.DataFrame({"experiment": experiment, "model": model, "fold": people.fold.to_numpy(),
                         "split": "oof", "image_key": people.image_key.to_numpy(),
                         "person": people.person.to_numpy(), "target": people.target.to_numpy()})


def eval_frame(ids: np.ndarray, model: str, fold: int, experiment: str = "exp") -> pd.DataFrame:
    return pd.DataFrame({"experiment": experiment, "model": model, "fold": fold, "split": "test",
                         "image_key": ids, "person": None, "target": pd.array([None] * len(ids), "Int8")})


def spec_dict(tmp_path: Path, models: list[str], n_splits: int, name: str = "exp", **blend) -> dict:
    return {"name": name, "data": {"root": str(tmp_path / "data")}, "folds": {"n_splits": n_splits},
            "models": [{"backbone": "resnet18", "name": m} for m in models],
            "results_dir": str(tmp_path / "results"), "blend": blend}


def write_data_root(tmp_path: Path, ids: np.ndarray, answers: np.ndarray) -> Path:
    root = tmp_path / "data"
    (root / "eval").mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir(exist_ok=True)
    pd.DataFrame({"ImageID": ids, "ans": 0}).to_csv(root / "eval" / "info.csv", index=False)
    pd.DataFrame({"ImageID": ids, "ans": answers}).to_csv(root / "truth" / "eval_answers.csv", index=False)
    return root


def write_experiment(tmp_path: Path, people: pd.DataFrame, models: FakeModels, answers: np.ndarray,
                     n_splits: int, name: str = "exp", pseudo: dict | None = None, **blend) -> Path:
    """results/<name>/ with spec.yaml, oof.parquet and test.parquet; people's targets are the OOF rows'.
    `pseudo`: the spec's pseudo: section (a round 2), e.g. {"source": ..., "per_fold": False}."""
    oof, test = models.oof, models.test
    ids = eval_ids(len(answers))
    write_data_root(tmp_path, ids, answers)
    spec = spec_dict(tmp_path, list(oof), n_splits, name, **blend) | ({"pseudo": pseudo} if pseudo else {})
    meta = LogitsMeta(rows_hash=Experiment.model_validate(spec).shared_hash())
    exp_dir = tmp_path / "results" / name
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    write_logits(exp_dir / "oof.parquet", logits_table(
        pd.concat([oof_frame(people, m, name) for m in oof], ignore_index=True),
        np.concatenate(list(oof.values())), meta))
    frames = [eval_frame(ids, m, k, name) for m in test for k in range(len(test[m]))]
    write_logits(exp_dir / "test.parquet", logits_table(
        pd.concat(frames, ignore_index=True), np.concatenate([x.reshape(-1, NUM_CLASSES) for x in test.values()]),
        meta))
    return exp_dir


def write_folds(exp_dir: Path, people: pd.DataFrame) -> Path:
    """results/<name>/folds.parquet as prepare writes it, for the people's images and folds."""
    stratum = (people.gender * 3 + age_band(people.age.to_numpy())).astype("int8")
    save_folds(exp_dir / "folds.parquet", people.assign(stratum=stratum), {"data_hash": "fake"})
    return exp_dir / "folds.parquet"


@dataclass(frozen=True)
class FakeModels:
    oof: dict[str, np.ndarray]  # model -> (N, 18) OOF logits
    test: dict[str, np.ndarray]  # model -> (K, T, 18) logits of each fold model


def fake_models(people: pd.DataFrame, answers: np.ndarray, n_splits: int, specs: dict[str, dict],
                seed: int = 0) -> FakeModels:
    """OOF and per-fold test logits for each model; specs[m] are model_logits' keyword args.
    `seed` moves every model's noise (another round's models err otherwise)."""
    oof, test = {}, {}
    for i, (model, kw) in enumerate(specs.items()):
        oof[model] = model_logits(people.target.to_numpy(), seed=100 + i + 7919 * seed, **kw)
        test[model] = fold_model_logits(answers, 1000 + 10 * i + 7919 * seed, n_splits, **kw)
    return FakeModels(oof, test)


@dataclass(frozen=True)
class FakeSpecialists:
    attribute: dict[str, str]  # model -> the attribute it predicts (train.target)
    oof: dict[str, np.ndarray]  # model -> (N, k) OOF logits
    test: dict[str, np.ndarray]  # model -> (K, T, k) logits of each fold model


def specialist_logits(target: np.ndarray, attribute: str, seed: int, strength: float = 3.0,
                      noise: float = 1.0) -> np.ndarray:
    """(N, k) logits of a specialist: `strength` on the true class of its attribute, plus noise."""
    rng = np.random.default_rng(seed)
    own = target_labels(np.asarray(target), attribute)
    k = ATTRIBUTE_SIZES[attribute]
    logits = strength * (np.arange(k)[None] == own[:, None]) + noise * rng.standard_normal((len(own), k))
    return logits.astype(np.float32)


def fake_specialists(people: pd.DataFrame, answers: np.ndarray, n_splits: int, specs: dict[str, dict],
                     seed: int = 0) -> FakeSpecialists:
    """Specialists' OOF and per-fold test logits; specs[m] = {"attribute": a, **specialist_logits' kwargs}."""
    attribute, oof, test = {}, {}, {}
    for i, (model, kw) in enumerate(specs.items()):
        kw = dict(kw)
        attribute[model] = kw.pop("attribute")
        oof[model] = specialist_logits(people.target.to_numpy(), attribute[model], 500 + i + 7919 * seed, **kw)
        base = specialist_logits(answers, attribute[model], 5000 + i + 7919 * seed, **kw)
        jitter = 0.4 * np.random.default_rng(6000 + i).standard_normal((n_splits, *base.shape))
        test[model] = (0.9 * base[None] + jitter).astype(np.float32)
    return FakeSpecialists(attribute, oof, test)


def write_specialists(exp_dir: Path, people: pd.DataFrame, fake: FakeSpecialists) -> Path:
    """Add specialists to a write_experiment folder: their models in spec.yaml (train.target) and
    oof_<attribute>.parquet / test_<attribute>.parquet as the gather step writes them."""
    spec = yaml.safe_load((exp_dir / "spec.yaml").read_text())
    spec["models"] += [{"backbone": "resnet18", "name": m, "train": {"target": a}} for m, a in fake.attribute.items()]
    (exp_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    rows_hash = read_logits(exp_dir / "oof.parquet")[2].rows_hash
    ids = pd.read_csv(Path(spec["data"]["root"]) / "eval" / "info.csv").ImageID.to_numpy(dtype=object)
    for a in ATTRIBUTES:
        names = [m for m, t in fake.attribute.items() if t == a]
        if not names:
            continue
        meta, k = LogitsMeta.of_target(rows_hash, a), ATTRIBUTE_SIZES[a]
        write_logits(exp_dir / gathered_name("oof", 0, a), logits_table(
            pd.concat([oof_frame(people, m, exp_dir.name) for m in names], ignore_index=True),
            np.concatenate([fake.oof[m] for m in names]), meta))
        frames = [eval_frame(ids, m, f, exp_dir.name) for m in names for f in range(len(fake.test[m]))]
        write_logits(exp_dir / gathered_name("test", 0, a), logits_table(
            pd.concat(frames, ignore_index=True), np.concatenate([fake.test[m].reshape(-1, k) for m in names]), meta))
    return exp_dir


@dataclass(frozen=True)
class Mislabeled:
    given: pd.DataFrame  # people as labelled: what the OOF targets say
    true: pd.DataFrame  # people as pictured: what the models see
    truth: pd.DataFrame  # relabel-format rows (person, field, value) that turn `given` into `true`


def inject_mislabels(people: pd.DataFrame, n_gender: int, n_swap: int, n_age: int, seed: int = 0) -> Mislabeled:
    """Pick distinct people whose labels are wrong: gender, swapped incorrect/normal files, age band."""
    rng = np.random.default_rng(seed)
    persons = rng.choice(people.person.unique(), n_gender + n_swap + n_age, replace=False)
    flips, swaps, aged = np.split(persons, [n_gender, n_gender + n_swap])
    true, rows = people.copy(), []
    on = true.person.isin(flips)
    true.loc[on, "gender"] = 1 - true.loc[on, "gender"]
    rows += [(p, "gender", GENDER_NAMES[int(true.gender[true.person == p].iloc[0])]) for p in flips]
    stem = true.image_key.str.rpartition("/")[2]
    mask = np.array([mask_of_stem(s) for s in stem])
    mask[true.person.isin(swaps) & (stem == "incorrect_mask")] = 2
    mask[true.person.isin(swaps) & (stem == "normal")] = 1
    rows += [r for p in swaps for r in ((p, "incorrect_mask", "not_worn"), (p, "normal", "incorrect"))]
    on = true.person.isin(aged)
    true.loc[on, "age"] = np.where(age_band(true.loc[on, "age"].to_numpy()) == 1, 60, 45)
    rows += [(p, "age", str(int(true.age[true.person == p].iloc[0]))) for p in aged]
    true["target"] = class_of(mask, true.gender.to_numpy(), age_band(true.age.to_numpy()))
    return Mislabeled(people, true, pd.DataFrame(rows, columns=["person", "field", "value"]))
