"""The exported fold models on onnxruntime alone: no torch, timm or Ray is imported.

What a photo goes through is the torch path's, piece by piece: the same decode and crop
(tasks/serving/images.py), the same eval pipeline and resize (`tasks.spec.augment.image_pipeline`),
and a graph that holds the same normalisation and logits18 (tasks/serving/onnx_export.py). Flip
TTA is the one step written again: the mean of the logits of the photo and its mirror image, as
`tasks.train.inference.predict` does (tests/test_export.py holds both paths to each other).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import sys
import time
from collections.abc import Sequence

import numpy as np

from tasks.log import Log
from tasks.serving.images import DecodedPhotos
from tasks.serving.members import FoldMember

BATCH = 32


class _HideTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@contextlib.contextmanager
def torch_hidden():
    """Imports inside see no torch. albumentations imports its optional torch bridge
    (`albumentations.pytorch`) whenever torch is installed: about a second and a gigabyte the
    exported runner has no use for. Without torch installed it skips the bridge; this makes it
    skip it here too. Nothing changes once torch is imported."""
    if "torch" in sys.modules:
        yield
        return
    hider = _HideTorch()
    sys.meta_path.insert(0, hider)
    try:
        yield
    finally:
        sys.meta_path.remove(hider)


def providers() -> list[str]:
    """onnxruntime's CUDA provider first when this install has it, else the CPU one."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def onnx_logits(members: Sequence[FoldMember], photos: dict[str, DecodedPhotos], log: Log,
                batch: int = BATCH, threads: int = 0) -> dict[str, np.ndarray]:
    """Every member's (readable photos, 18) logits. Members that see the same photos the same way
    (one model's folds) share each batch's preprocessing. `threads`: onnxruntime's per session
    (0: its default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads

    with torch_hidden():
        from tasks.spec.augment import image_pipeline

        image_pipeline([], (8, 8))  # albumentations imported here, without its torch bridge
    groups: dict[tuple, list[FoldMember]] = {}
    for m in members:
        groups.setdefault((m.decoding.key, repr(m.model_input)), []).append(m)
    logits, done = {}, 0
    for group in groups.values():
        started = time.monotonic()
        first = group[0]
        sessions = [ort.InferenceSession(str(m.weights), options, providers=providers()) for m in group]
        pipeline = image_pipeline(first.model_input.eval_steps, first.model_input.input_size)
        images = photos[first.decoding.key]
        outs = _run_group(sessions, pipeline, images, first.model_input.tta_flip, batch)
        logits.update({m.key: out for m, out in zip(group, outs)})
        done += len(group)
        seconds = time.monotonic() - started
        n = len(images.readable)
        models = ", ".join(dict.fromkeys(m.model for m in group))
        log(f"  [{done}/{len(members)}] {len(group)} fold models of {models}: {n} photos in {seconds:.1f}s "
            f"({n * len(group) / max(seconds, 1e-9):.0f} photos x models/s)")
    return logits


def _run_group(sessions, pipeline, images: DecodedPhotos, tta_flip: bool, batch: int) -> list[np.ndarray]:
    array = images.cache.open()
    rows = images.cache.rows(images.readable)
    outs: list[list[np.ndarray]] = [[] for _ in sessions]
    for at in range(0, len(rows), batch):
        x = np.stack([pipeline(image=np.asarray(array[r]))["image"] for r in rows[at:at + batch]])
        mirrored = np.ascontiguousarray(x[:, :, ::-1]) if tta_flip else None  # NHWC: axis 2 is the width
        for session, out in zip(sessions, outs):
            z = session.run(["logits"], {"images": x})[0]
            if mirrored is not None:
                z = (z + session.run(["logits"], {"images": mirrored})[0]) / 2
            out.append(z.astype(np.float32))
    return [np.concatenate(o) if o else np.zeros((0, 18), np.float32) for o in outs]
