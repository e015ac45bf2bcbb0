"""Person-level stratified folds on data shaped like the real training set."""
import hashlib

import numpy as np
import pandas as pd
import pytest

from tasks.data.dataset import DataError
from tasks.data.folds import load_folds, make_folds, save_folds
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


def test_without_links_folds_are_those_of_earlier_versions(real_shaped):
    # Existing experiments keep their folds: the digest of what make_folds gave before people
    # could be linked (a per-person StratifiedKFold).
    folds = make_folds(real_shaped, 5, seed=7)
    assert hashlib.sha256(folds["fold"].to_numpy().tobytes()).hexdigest()[:16] == "b257c2534423eacb"
    assert make_folds(real_shaped, 5, seed=7, linked=[]).equals(folds)


def test_linked_people_are_held_out_together(real_shaped):
    persons = real_shaped["person"].unique()
    linked = [(persons[0], persons[1500]), (persons[10], persons[20], persons[2000])]
    folds = make_folds(real_shaped, 5, seed=7, linked=linked)
    fold = folds.drop_duplicates("person").set_index("person")["fold"]
    for group in linked:
        assert fold[list(group)].nunique() == 1
    assert (folds.groupby("person")["fold"].nunique() == 1).all() and len(folds) == len(real_shaped)
    # a group counts once, with its first person's stratum: still balanced
    assert fold.value_counts().max() - fold.value_counts().min() <= 3


def test_round_trip_keeps_metadata(real_shaped, tmp_path):
    folds = make_folds(real_shaped, 3, seed=0)
    save_folds(tmp_path / "folds.parquet", folds, {"data_hash": "abc", "n_splits": "3"})
    loaded, meta = load_folds(tmp_path / "folds.parquet")
    assert meta == {"data_hash": "abc", "n_splits": "3"}
    assert loaded["fold"].tolist() == folds["fold"].tolist()


def test_too_few_people_is_an_error(real_shaped):
    few = real_shaped[real_shaped["person"].isin(real_shaped["person"].unique()[:3])]
    with pytest.raises(DataError, match=r"folds\.n_splits=5 but the data has only 3 people.*--set folds\.n_splits=3"):
        make_folds(few, 5, seed=0)


def _some_people(real_shaped, per_band: dict[tuple[int, int], int]) -> pd.DataFrame:
    people = real_shaped.drop_duplicates("person")
    band = people["gender"] * 3 + age_band(people["age"])
    keep = [p for (g, b), n in per_band.items() for p in people.person[band == g * 3 + b].head(n)]
    return real_shaped[real_shaped["person"].isin(keep)]


def test_every_band_smaller_than_n_splits_is_an_error_naming_the_counts(real_shaped):
    # sklearn: "n_splits=5 cannot be greater than the number of members in each class"
    small = _some_people(real_shaped, {(0, 0): 4, (1, 1): 3, (1, 2): 2})
    with pytest.raises(DataError) as info:
        make_folds(small, 5, seed=0)
    text = str(info.value)
    assert text.startswith("folds.n_splits=5 is more than the people in every gender x age band")
    assert "male <30: 4, female 30-59: 3, female >=60: 2" in text
    assert "--set folds.n_splits=4" in text


def test_a_band_smaller_than_n_splits_is_named_in_a_warning(real_shaped, capsys):
    few_old = _some_people(real_shaped, {(0, 0): 40, (0, 1): 30, (0, 2): 6, (1, 0): 50, (1, 1): 50, (1, 2): 2})
    folds = make_folds(few_old, 5, seed=0)
    err = capsys.readouterr().err
    assert "warning: folds.n_splits=5" in err
    assert "female >=60: 2 people, so 3 of 5 folds validate none of them" in err
    assert err.count("people, so") == 1  # male >=60 has 6: every fold gets one
    old = folds[folds.stratum == 5].drop_duplicates("person")
    assert old.fold.nunique() == 2
