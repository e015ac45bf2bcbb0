"""A fold model as an ONNX graph: uint8 NHWC images at the model's input size in, 18 logits out.

The graph holds the eval path's own normalisation (`tasks.data.batches.to_device`) and
`logits18` (so a multi-head model gives the same joint log-probabilities), traced from the
code the eval path runs; what stays outside is the decode, crop and eval pipeline (the same
torch-free code in both paths) and the TTA (tasks/serving/onnx_runner.py).

The exporter is torch's default since 2.9 (`torch.onnx.export(dynamo=True)`, with
onnxscript): it runs offline and, unlike the older TorchScript exporter, exports timm's ViTs
(their position-embedding resampling). Opset 18 is the oldest it writes natively and runs on
onnxruntime's CPU and CUDA providers alike.
"""
from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np
import torch

from tasks.data.batches import to_device
from tasks.errors import UserError
from tasks.train.fold_models import FoldModel
from tasks.train.model import logits18

OPSET = 18
TOLERANCE = 1e-3  # largest logit difference from torch accepted on the check batch


class ExportError(UserError, RuntimeError):
    """A fold model that does not export to ONNX, or whose graph disagrees with torch."""


class KeywordSafeHeads(torch.nn.ModuleDict):
    """A Net's heads held under names the exporter can write, given back under their own.

    The single head is called "class", a Python keyword: torch.export's unlifting writes the
    line `self.net.heads.class.weight` and fails with a SyntaxError (torch 2.14). Held as
    "class_", while `items()` (all Net.forward reads) names them as before, so Net.forward
    and logits18 run unchanged; the saved weights' keys are untouched (this is a copy).
    """

    def __init__(self, heads: torch.nn.ModuleDict):
        super().__init__({f"{name}_": head for name, head in heads.items()})

    def items(self):
        return [(name[:-1], head) for name, head in super().items()]


class ExportedGraph(torch.nn.Module):
    """The fold model from the cached uint8 image to its 18 logits, as the eval path computes them."""

    def __init__(self, fm: FoldModel):
        super().__init__()
        self.net = copy.deepcopy(fm.net).cpu().float().eval()
        self.net.heads = KeywordSafeHeads(self.net.heads)
        self.register_buffer("norm_mean", fm.norm[0].detach().cpu().float())
        self.register_buffer("norm_std", fm.norm[1].detach().cpu().float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_device(images, self.norm_mean, self.norm_std, images.device, channels_last=False)
        return logits18(self.net(x))


def export_fold_model(fm: FoldModel, path: Path, name: str) -> float:
    """Write `path` (a single .onnx file, weights inside) and return its largest logit difference
    from torch on a check batch; ExportError if it cannot be exported or differs by > TOLERANCE."""
    graph = ExportedGraph(fm).eval()
    h, w = fm.train.input_size
    example = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, h, w, 3), dtype=np.uint8))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its steps
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes={"images": {0: torch.export.Dim.DYNAMIC}}, verbose=False)
        program.save(str(path), external_data=False)
    except Exception as err:  # the exporter raises many types, each naming the operator or guard
        raise ExportError(f"{name}: does not export to ONNX ({type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''})") from None
    with torch.no_grad():
        expected = graph(example).numpy()
    difference = float(np.abs(check_run(path, example.numpy()) - expected).max())
    if not difference <= TOLERANCE:
        raise ExportError(f"{name}: the ONNX graph's logits differ from torch's by {difference:.2e} on random images "
                          f"(more than {TOLERANCE:g}); this backbone does not export faithfully")
    return difference


def check_run(path: Path, images: np.ndarray) -> np.ndarray:
    """The exported graph's logits on onnxruntime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images})[0]


def check_tta_exportable(train, name: str) -> None:
    """ExportError for a TTA setting the exported runner does not apply: it applies flip TTA
    (train.tta_flip) alone, and a model exported without the rest would answer differently."""
    fields = type(train).model_fields
    other = {k: v for k, v in train.model_dump(mode="json").items()
             if k.startswith("tta") and k != "tta_flip"
             and v != fields[k].get_default(call_default_factory=True)}
    if other:
        raise ExportError(f"{name}: train.{', train.'.join(other)} is set, but the exported runner applies only "
                          "flip TTA (train.tta_flip); predict with torch (without --exported) instead")


def export_member(member, path: Path) -> dict:
    """A fold model (tasks.serving.members.FoldMember) from its best.pt to `path`; what its graph holds."""
    from tasks.train.fold_models import load_fold_model

    fm = load_fold_model(member.spec, member.spec_model, member.fold, member.weights)
    check_tta_exportable(fm.train, member.key)
    difference = export_fold_model(fm, path, member.key)
    mean, std = (t.detach().cpu().flatten().tolist() for t in fm.norm)
    return {"max_logit_difference": difference, "normalisation": {"mean": mean, "std": std, "in_graph": True}}
