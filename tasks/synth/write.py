"""Synthetic dataset in the competition's exact layout, quirks and label errors included.

    python -m tasks.synth OUT --persons N --seed S --size WxH
        [--eval-persons M] [--mislabel-rate R] [--overwrite] [--workers K]

Writes OUT/train (images + train.csv), OUT/eval (images + info.csv, ans all 0) and
OUT/truth (eval answers, eval persons, true training labels, mislabeled.csv in the
relabel format, face_boxes.csv in the data.face.boxes format). Same arguments ->
byte-identical files, whatever the worker count.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.labels import GENDER_NAMES, MASK_NAMES, MASK_STEMS, age_band, class_of, mask_of_stem
from tasks.synth.draw import face_boxes, make_look, make_shots, render_person
from tasks.synth.face_boxes import image_key, make_framing, write_face_boxes

# People per (gender, age band) in the real training set; both splits follow it.
REAL_CELLS = {(0, 0): 549, (0, 1): 410, (0, 2): 83, (1, 0): 732, (1, 1): 817, (1, 2): 109}
YOUNG_WEIGHTS = dict(zip(range(18, 30), (10, 16, 18, 16, 14, 12, 10, 9, 8, 8, 7, 7)))
# 30-59: flat, more people in their fifties, and 57-59 as counted in the real data.
MIDDLE_WEIGHTS = {**{a: 26 for a in range(30, 50)}, **{a: 51 for a in range(50, 57)},
                  57: 106, 58: 159, 59: 85}
MIN_PERSONS = 8  # enough people to carry every quirk at once
JUNK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 32 + b"ATTR"
MARKER = "synth_params.json"
TRAIN, EVAL = 0, 1  # first element of each person's RNG spawn key
# Below this many output pixels (~300 photos at 384x512) starting worker processes
# costs more than it saves.
POOL_MIN_PIXELS = 60_000_000


@dataclass(frozen=True)
class Person:
    """One person; `listed_gender` is what the folder name says (may be wrong)."""

    key: int
    id: str
    gender: int
    age: int
    listed_gender: int
    swapped: bool  # incorrect_mask and normal trade files
    exts: tuple[str, ...]  # per stem, in MASK_STEMS order

    @property
    def folder(self) -> str:
        return f"{self.id}_{GENDER_NAMES[self.listed_gender]}_Asian_{self.age}"


@dataclass(frozen=True)
class RenderJob:
    """Everything a worker needs to draw and save one person's seven photos."""

    seed: int
    split: int
    key: int
    gender: int
    age: int
    masks: tuple[int, ...]  # mask state drawn into each file
    paths: tuple[str, ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class SynthSummary:
    """Counts of what write_synth wrote; str() is the one-line CLI summary."""

    train_people: int
    train_folders: int
    train_images: int
    eval_people: int
    eval_images: int
    extensions: tuple[tuple[str, int], ...]
    gender_flips: int
    swaps: int
    junk_files: int
    seconds: float

    def __str__(self) -> str:
        ext = ", ".join(f"{e} {n}" for e, n in self.extensions)
        return (f"train: {self.train_people} people, {self.train_images} images ({ext}); "
                f"eval: {self.eval_people} people, {self.eval_images} images; mislabeled: "
                f"{self.gender_flips} gender + {self.swaps} swapped; {self.junk_files} junk "
                f"files; {self.seconds:.1f}s")


def _cell_quota(n: int) -> list[tuple[int, int, int]]:
    """(gender, band, count) with the real shares, rounded by largest remainder."""
    total = sum(REAL_CELLS.values())
    exact = {c: n * v / total for c, v in REAL_CELLS.items()}
    counts = {c: int(x) for c, x in exact.items()}
    for c in sorted(exact, key=lambda c: counts[c] - exact[c])[: n - sum(counts.values())]:
        counts[c] += 1
    return [(g, b, k) for (g, b), k in counts.items()]


def _sample_people(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """(gender, age) pairs in the real proportions, shuffled."""
    people = []
    for gender, band, count in _cell_quota(n):
        weights = (YOUNG_WEIGHTS, MIDDLE_WEIGHTS, {60: 1})[band]
        ages, w = np.array(list(weights)), np.array(list(weights.values()), float)
        people += [(gender, int(a)) for a in rng.choice(ages, size=count, p=w / w.sum())]
    return [people[i] for i in rng.permutation(len(people))]


def _extensions(rng: np.random.Generator, n: int) -> list[tuple[str, ...]]:
    """Mostly .jpg; ~2.7% all .png, ~1.9% .jpeg of which some keep one .jpg."""
    kinds = [("png" if u < 0.027 else "jpeg" if u < 0.046 else "jpg") for u in rng.random(n)]
    kinds = [("mixed" if k == "jpeg" and rng.random() < 0.3 else k) for k in kinds]
    for need in ("png", "jpeg", "mixed"):  # every quirk at least once, even for small n
        if need not in kinds:
            kinds[int(rng.choice([i for i, k in enumerate(kinds) if k == "jpg"]))] = need
    exts = []
    for kind in kinds:
        one = {"mixed": "jpeg"}.get(kind, kind)
        row = ["." + one] * len(MASK_STEMS)
        if kind == "mixed":
            row[int(rng.integers(len(MASK_STEMS)))] = ".jpg"
        exts.append(tuple(row))
    return exts


def _train_people(rng: np.random.Generator, n: int, mislabel_rate: float) -> list[Person]:
    pairs = _sample_people(rng, n)
    ids = [f"{i:06d}" for i in np.sort(rng.choice(np.arange(1, 3 * n + 10), n, replace=False))]
    # The real archive has one id shared by two folders with ages 19 and 20 ...
    young = [i for i, (g, a) in enumerate(pairs) if a < 30 and g == 1]
    first, second = (int(i) for i in rng.choice(young, 2, replace=False))
    pairs[first], pairs[second] = (1, 19), (1, 20)
    ids[second] = ids[first]
    # ... and one id with a "-1" suffix.
    suffixed = int(rng.choice([i for i in range(n) if i not in (first, second)]))
    ids[suffixed] += "-1"
    k = int(mislabel_rate * n + 0.5)
    wrong = [int(i) for i in rng.choice(n, size=k, replace=False)]
    swapped, flipped = set(wrong[: k // 3]), set(wrong[k // 3:])
    exts = _extensions(rng, n)
    return [Person(key=i, id=ids[i], gender=g, age=a, listed_gender=(1 - g) if i in flipped else g,
                   swapped=i in swapped, exts=exts[i]) for i, (g, a) in enumerate(pairs)]


def _eval_people(rng: np.random.Generator, m: int, first_id: int) -> list[Person]:
    return [Person(key=j, id=f"{first_id + j:06d}", gender=g, age=a, listed_gender=g,
                   swapped=False, exts=(".jpg",) * len(MASK_STEMS))
            for j, (g, a) in enumerate(_sample_people(rng, m))]


def _drawn_masks(person: Person) -> tuple[int, ...]:
    masks = [mask_of_stem(s) for s in MASK_STEMS]
    if person.swapped:  # the incorrect-mask photo is saved as normal and vice versa
        masks[-2], masks[-1] = masks[-1], masks[-2]
    return tuple(masks)


def _render(job: RenderJob) -> list[tuple[str, tuple[int, ...]]]:
    """Draw and save one person's photos; (image key, face box) of each."""
    seq = np.random.SeedSequence(job.seed, spawn_key=(job.split, job.key))
    # A fourth stream for the framing: the first three (and so the looks and shots) are unchanged.
    look_rng, shot_rng, pixel_rng, frame_rng = (np.random.default_rng(s) for s in seq.spawn(4))
    look, framing = make_look(look_rng, job.gender, job.age), make_framing(frame_rng)
    shots = make_shots(shot_rng, job.masks)
    images = render_person(look, shots, job.size, pixel_rng, framing)
    for img, path in zip(images, job.paths):
        if path.endswith(".png"):
            img.save(path, format="PNG")
        else:
            img.save(path, format="JPEG", quality=90)
    return [(image_key(p, job.split == TRAIN), box) for p, box in zip(job.paths, face_boxes(look, shots, job.size,
                                                                                          framing))]


def _run(jobs: list[RenderJob], workers: int) -> list[tuple[str, tuple[int, ...]]]:
    pixels = sum(len(j.paths) * j.size[0] * j.size[1] for j in jobs)
    if workers <= 1 or pixels < POOL_MIN_PIXELS:
        return [box for job in jobs for box in _render(job)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return [box for boxes in pool.imap_unordered(_render, jobs, chunksize=4) for box in boxes]


def _train_jobs(seed: int, people: list[Person], images: Path, size: tuple[int, int]):
    return [RenderJob(seed, TRAIN, p.key, p.gender, p.age, _drawn_masks(p),
                      tuple(str(images / p.folder / (s + e)) for s, e in zip(MASK_STEMS, p.exts)),
                      size) for p in people]


def _image_id(seed: int, person: Person, stem: str) -> str:
    # 40 hex characters like the real ImageIDs, stable for a seed.
    return hashlib.sha1(f"maskfold-synth/{seed}/{person.id}/{stem}".encode()).hexdigest() + ".jpg"


def _eval_jobs(seed: int, people: list[Person], images: Path, size: tuple[int, int]):
    return [RenderJob(seed, EVAL, p.key, p.gender, p.age, _drawn_masks(p),
                      tuple(str(images / _image_id(seed, p, s)) for s in MASK_STEMS), size)
            for p in people]


def _eval_rows(rng: np.random.Generator, seed: int, people: list[Person]) -> pd.DataFrame:
    """One row per eval image, shuffled so a person's photos are not adjacent."""
    rows = [(_image_id(seed, p, stem), p.id, p.gender, p.age, mask_of_stem(stem))
            for p in people for stem in MASK_STEMS]
    frame = pd.DataFrame(rows, columns=["ImageID", "person", "gender", "age", "mask"])
    frame["ans"] = class_of(frame["mask"].to_numpy(), frame["gender"].to_numpy(),
                            age_band(frame["age"].to_numpy())).astype(np.int64)
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def _add_quirks(rng: np.random.Generator, images: Path, people: list[Person]) -> int:
    """macOS `._*` files and Jupyter checkpoint folders as in the real archive."""
    junk = 0
    for i in rng.choice(len(people), max(1, round(0.05 * len(people))), replace=False):
        p = people[int(i)]
        files = [s + e for s, e in zip(MASK_STEMS, p.exts)]
        for name in rng.choice(files, int(rng.integers(1, len(files) + 1)), replace=False):
            (images / p.folder / f"._{name}").write_bytes(JUNK)
            junk += 1
    for i in rng.choice(len(people), max(1, len(people) // 500), replace=False):
        (images / f"._{people[int(i)].folder}").write_bytes(JUNK)
        junk += 1
    (images / ".ipynb_checkpoints").mkdir()
    p = people[int(rng.integers(len(people)))]
    (images / p.folder / ".ipynb_checkpoints").mkdir()
    shutil.copyfile(images / p.folder / ("normal" + p.exts[-1]),
                    images / p.folder / ".ipynb_checkpoints" / ("normal-checkpoint" + p.exts[-1]))
    return junk


def _write_train_csvs(out: Path, people: list[Person]) -> None:
    people = sorted(people, key=lambda p: p.folder)
    pd.DataFrame({"id": [p.id for p in people], "gender": [GENDER_NAMES[p.listed_gender] for p in people],
                  "race": "Asian", "age": [p.age for p in people], "path": [p.folder for p in people]},
                 ).to_csv(out / "train" / "train.csv", index=False)
    pd.DataFrame({"path": [p.folder for p in people], "gender": [GENDER_NAMES[p.gender] for p in people],
                  "age": [p.age for p in people], "swapped": [int(p.swapped) for p in people]},
                 ).to_csv(out / "truth" / "train_persons.csv", index=False)
    fixes = []  # rows that correct the folder names, in the relabel-file format
    for p in people:
        if p.listed_gender != p.gender:
            fixes.append((p.folder, "gender", GENDER_NAMES[p.gender]))
        if p.swapped:
            fixes += [(p.folder, "incorrect_mask", MASK_NAMES[2]), (p.folder, "normal", MASK_NAMES[1])]
    pd.DataFrame(fixes, columns=["person", "field", "value"]).to_csv(
        out / "truth" / "mislabeled.csv", index=False)


def _write_eval_csvs(out: Path, rows: pd.DataFrame) -> None:
    rows.assign(ans=0)[["ImageID", "ans"]].to_csv(out / "eval" / "info.csv", index=False)
    rows[["ImageID", "ans"]].to_csv(out / "truth" / "eval_answers.csv", index=False)
    rows.assign(gender=[GENDER_NAMES[g] for g in rows["gender"]],
                mask=[MASK_NAMES[m] for m in rows["mask"]],
                )[["ImageID", "person", "gender", "age", "mask"]].to_csv(
        out / "truth" / "eval_persons.csv", index=False)


class SynthError(ValueError):
    """Bad arguments, or an output folder that must not be touched."""


def _prepare_out(out: Path, overwrite: bool, params: dict) -> None:
    existing = [d for d in ("train", "eval", "truth") if (out / d).exists()]
    if existing and not overwrite:
        raise SynthError(f"{out} already contains {', '.join(existing)}/; "
                         "pass --overwrite to replace an earlier synthetic dataset")
    if existing and not (out / "truth" / MARKER).is_file():
        # Without the marker this may be the real data: never delete it.
        raise SynthError(f"{out} contains {', '.join(existing)}/ but no truth/{MARKER}; "
                         "not written by tasks.synth, refusing to delete it")
    for d in existing:
        shutil.rmtree(out / d)
    for d in ("train/images", "eval/images", "truth"):
        (out / d).mkdir(parents=True)
    # Written first, so a crashed run can still be overwritten.
    (out / "truth" / MARKER).write_text(json.dumps(params, sort_keys=True) + "\n")


def _check(persons: int, seed: int, size: tuple[int, int], eval_persons: int, rate: float) -> None:
    if persons < MIN_PERSONS:
        raise SynthError(f"--persons must be at least {MIN_PERSONS} (got {persons})")
    if seed < 0 or eval_persons < 0:
        raise SynthError("--seed and --eval-persons must not be negative")
    if not 0 <= rate <= 0.5:
        raise SynthError(f"--mislabel-rate must be within [0, 0.5] (got {rate})")
    if not all(16 <= s <= 4096 for s in size):
        raise SynthError(f"--size sides must be within 16..4096 (got {size[0]}x{size[1]})")


def write_synth(out: Path, persons: int, seed: int, size: tuple[int, int],
                eval_persons: int | None = None, mislabel_rate: float = 0.02, *,
                overwrite: bool = False, workers: int | None = None) -> SynthSummary:
    """Write the dataset under `out`; size is (W, H). Raises SynthError on bad input."""
    start = time.perf_counter()
    out, size = Path(out), (int(size[0]), int(size[1]))
    m = round(persons * 2 / 3) if eval_persons is None else eval_persons  # real 40/60 split
    _check(persons, seed, size, m, mislabel_rate)
    _prepare_out(out, overwrite, {"generator": "tasks.synth", "persons": persons, "seed": seed,
                                  "size": list(size), "eval_persons": m,
                                  "mislabel_rate": mislabel_rate})
    rng = np.random.default_rng(seed)
    train = _train_people(rng, persons, mislabel_rate)
    evals = _eval_people(rng, m, first_id=3 * persons + 10)
    rows = _eval_rows(rng, seed, evals)
    images = out / "train" / "images"
    for p in train:
        (images / p.folder).mkdir()
    workers = (os.cpu_count() or 1) if workers is None else workers
    boxes = _run(_train_jobs(seed, train, images, size) + _eval_jobs(seed, evals, out / "eval" / "images", size),
                 workers)
    write_face_boxes(out / "truth" / "face_boxes.csv", boxes)
    junk = _add_quirks(rng, images, train)
    _write_train_csvs(out, train)
    _write_eval_csvs(out, rows)
    exts = Counter(e for p in train for e in p.exts)
    return SynthSummary(
        train_people=persons, train_folders=len({p.folder for p in train}),
        train_images=persons * len(MASK_STEMS), eval_people=m, eval_images=len(rows),
        extensions=tuple(sorted(exts.items(), key=lambda kv: -kv[1])),
        gender_flips=sum(p.listed_gender != p.gender for p in train),
        swaps=sum(p.swapped for p in train), junk_files=junk,
        seconds=time.perf_counter() - start)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H); argparse turns the ValueError into a usage error."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size must look like 48x64 (W x H), got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.synth", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="writes:\n  OUT/train/images/<profile>/, OUT/train/train.csv, OUT/eval/info.csv, OUT/eval/images/,\n"
               "  OUT/truth/eval_answers.csv, OUT/truth/mislabeled.csv, OUT/truth/train_persons.csv,\n"
               "  OUT/truth/face_boxes.csv (where each face was drawn, in the data.face.boxes format)\n\n"
               "examples:\n  python -m tasks.synth data/synth --persons 150 --size 48x64\n"
               "  python -m tasks.synth /tmp/real_size --persons 60 --size 384x512 --seed 3")
    parser.add_argument("out", type=Path, help="folder to create train/, eval/ and truth/ in")
    parser.add_argument("--persons", type=int, default=60, help="training people (default 60; real: 2700)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of everything drawn: people, labels, faces, mislabels (default 0); the same "
                             "seed writes the same bytes")
    parser.add_argument("--size", type=parse_size, default=(48, 64), help="W x H (default 48x64; real: 384x512)")
    parser.add_argument("--eval-persons", type=int, default=None,
                        help="eval people (default: 2/3 of --persons, the real 40/60 split)")
    parser.add_argument("--mislabel-rate", type=float, default=0.02,
                        help="share of training people given a wrong label (default 0.02)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier synthetic dataset in OUT")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    try:
        summary = write_synth(args.out, args.persons, args.seed, args.size, args.eval_persons,
                              args.mislabel_rate, overwrite=args.overwrite, workers=args.workers)
    except SynthError as e:
        parser.error(str(e))
    print(f"{args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
