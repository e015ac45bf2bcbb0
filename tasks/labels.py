"""The competition's label scheme: class = mask*6 + gender*3 + age band."""
from __future__ import annotations

import numpy as np

NUM_CLASSES = 18
MASK_STEMS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
MASK_NAMES = ("wear", "incorrect", "not_worn")
GENDER_NAMES = ("male", "female")
AGE_NAMES = ("<30", "30-59", ">=60")
# The competition's own borders; training may shift them, validation never does.
TRUE_AGE_BORDERS = (30, 60)
# The three attributes a class is made of, each with its classes; a model's `train.target` is
# one of them (a specialist) or "all" (the 18 classes).
ATTRIBUTES = ("mask", "gender", "age")
ATTRIBUTE_SIZES = {"mask": len(MASK_NAMES), "gender": len(GENDER_NAMES), "age": len(AGE_NAMES)}
ALL = "all"


def mask_of_stem(stem: str) -> int:
    """Mask state a file name stands for: mask1..5 worn, incorrect_mask, normal."""
    if stem == "incorrect_mask":
        return 1
    if stem == "normal":
        return 2
    if stem in MASK_STEMS:
        return 0
    raise ValueError(f"not one of the seven image names {MASK_STEMS}: {stem!r}")


def age_band(age, borders: tuple[int, int] = TRUE_AGE_BORDERS):
    """0 below borders[0], 1 below borders[1], else 2 (scalar or array)."""
    age = np.asarray(age)
    band = (age >= borders[0]).astype(np.int64) + (age >= borders[1]).astype(np.int64)
    return int(band) if band.ndim == 0 else band


def class_of(mask, gender, band):
    """18-class label from the three attributes (scalars or arrays)."""
    return np.asarray(mask) * 6 + np.asarray(gender) * 3 + np.asarray(band)


def split_class(label):
    """Inverse of class_of: (mask, gender, band) arrays."""
    label = np.asarray(label)
    return label // 6, (label // 3) % 2, label % 3


def target_width(target: str) -> int:
    """Classes a model of `train.target` predicts: 18 for "all", else its attribute's."""
    return NUM_CLASSES if target == ALL else ATTRIBUTE_SIZES[target]


def target_labels(label, target: str):
    """The 18-class labels as a model of `target` is scored on: themselves, or one attribute's."""
    return np.asarray(label) if target == ALL else split_class(label)[ATTRIBUTES.index(target)]


# "wear/male/<30" for class 0 ... "not_worn/female/>=60" for class 17
CLASS_NAMES = tuple(f"{MASK_NAMES[m]}/{GENDER_NAMES[g]}/{AGE_NAMES[a]}"
                    for m, g, a in zip(*split_class(np.arange(NUM_CLASSES))))
