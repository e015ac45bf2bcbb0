"""Person-level stratified folds on data shaped like the real training set."""
import numpy as np
import pandas as pd
import pytest

from tasks.folds import load_folds, make_folds, save_folds
from tasks.labels import MASK_STEMS, age_band

# People per (gender, age band) in the real training set (competition facts).
REAL = {(0, 0): 549, (0, 1): 410, (0, 2): 83, (1, 0): 732, (1, 1): 817, (1, 2): 109}
AGES = {0: (18, 29), 1: (30, 59), 2: (60, 60)}


@pytest.fixture(scope="module")
def real_shaped() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for (gender, band), count in REAL.items():
        for n in range(count):
            person = f"{len(rows) // 7:06d}_{gender}_{band}_{n}"
            age = int(rng.integers(AGES[band][0], AGES[band][1] + 1))
            rows += [{"image_key": f"{person}/{s}", "person": person, "gender": gender, "age": age}
                     for s in MASK_STEMS]
    return pd.DataFrame(rows)


def test_people_never_split_and_every_image_once(real_shaped):
    folds = make_folds(real_shaped, 5, seed=1)
    assert len(folds) == len(real_shaped) and folds["image_key"].is_unique
    assert set(folds["image_key"]) == set(real_shaped["image_key"])
    assert (folds.groupby("person")["fold"].nunique() == 1).all()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]


def test_strata_proportions_match_the_whole(real_shaped):
    folds = make_folds(real_shaped, 5, seed=1)
    people = folds.drop_duplicates("person")
    whole = people["stratum"].value_counts(normalize=True)
    for _, part in people.groupby("fold"):
        share = part["stratum"].value_counts(normalize=True).reindex(whole.index, fill_value=0)
        assert (share - whole).abs().max() < 0.01
    # strata are gender x age band
    merged = people.merge(real_shaped.drop_duplicates("person"), on="person")
    assert (merged["stratum"] == merged["gender"] * 3 + age_band(merged["age"])).all()


def test_seed_determines_folds(real_shaped):
    a, b = make_folds(real_shaped, 5, seed=1), make_folds(real_shaped, 5, seed=1)
    c = make_folds(real_shaped, 5, seed=2)
    assert a.equals(b)
    assert not a["fold"].equals(c["fold"])


def test_round_trip_keeps_metadata(real_shaped, tmp_path):
    folds = make_folds(real_shaped, 3, seed=0)
    save_folds(tmp_path / "folds.parquet", folds, {"data_hash": "abc", "n_splits": "3"})
    loaded, meta = load_folds(tmp_path / "folds.parquet")
    assert meta == {"data_hash": "abc", "n_splits": "3"}
    assert loaded["fold"].tolist() == folds["fold"].tolist()


def test_too_few_people_is_an_error(real_shaped):
    few = real_shaped[real_shaped["person"].isin(real_shaped["person"].unique()[:3])]
    with pytest.raises(ValueError, match="only 3 people"):
        make_folds(few, 5, seed=0)
