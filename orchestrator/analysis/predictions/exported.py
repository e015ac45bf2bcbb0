"""The chosen ensemble as a folder of its own: each weighed fold model as ONNX, and `blend.json`
with everything applied around them (decode and crop, eval pipeline and input size, TTA, the
fold mean, the fitted blend), read back here into the same Ensemble the torch path predicts with.

Reading it imports no torch: `predict --exported DIR` runs on onnxruntime alone.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.analysis.predictions.ensemble import Ensemble, PredictError, fitted_blend
from tasks.atomic import atomic_dir
from tasks.log import Log
from tasks.serving.images import Decoding
from tasks.serving.members import FoldMember, ModelInput

FORMAT = 1
BLEND_KEYS = ("method", "vote", "decode", "weights", "temperatures", "offsets", "bonus", "refit")


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", key) + ".onnx"


def write_exported(ensemble: Ensemble, out: Path, export: Callable[[FoldMember, Path], dict], log: Log) -> Path:
    """The folder `out`, built aside and swapped in whole; `export(member, path)` writes one graph."""
    special = [f"{m} ({t})" for m, t in zip(ensemble.models, ensemble.targets) if t != "all"]
    if special:
        raise PredictError(f"{ensemble.folder}: the blend has attribute specialists ({', '.join(special)}); the "
                           "exported runner applies blends of 18-class models only: predict with torch (without "
                           "--exported) instead")
    decodings = list(dict.fromkeys(m.decoding.key for m in ensemble.members))
    by_key = {m.decoding.key: m.decoding for m in ensemble.members}
    members = []
    with atomic_dir(out) as tmp:
        (tmp / "models").mkdir()
        for i, m in enumerate(ensemble.members, start=1):
            started = time.monotonic()
            info = export(m, tmp / "models" / _file_name(m.key))
            log(f"  [{i}/{len(ensemble.members)}] {m.key} -> models/{_file_name(m.key)} ({time.monotonic() - started:.1f}s, "
                f"largest logit difference from torch {info['max_logit_difference']:.1e})")
            members.append({"key": m.key, "model": m.model, "fold": m.fold, "file": f"models/{_file_name(m.key)}",
                            "decoding": decodings.index(m.decoding.key), "input": m.model_input.record(), **info})
        record = {"format": FORMAT, "source": str(ensemble.folder.resolve()),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "blend": {k: ensemble.record[k] for k in BLEND_KEYS if k in ensemble.record},
                  "combine": "each model's logits: the mean of its fold models' logits (fold order); a model in "
                             "blend.refit.models: that mean and its refit model (fold -1) averaged, or the refit "
                             "model alone (blend.refit.combine: replace)",
                  "decodings": [by_key[k].record() for k in decodings], "members": members}
        (tmp / "blend.json").write_text(json.dumps(record, indent=2))
        (tmp / "README.md").write_text(readme(ensemble, record))
    return out


def read_exported(folder: Path) -> Ensemble:
    """An exported folder as an Ensemble whose members' weights are its ONNX files."""
    path = folder / "blend.json"
    if not path.is_file():
        raise PredictError(f"{folder}: not an exported ensemble (no blend.json); make one with "
                           "`python -m orchestrator.export --out DIR`")
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise PredictError(f"{path}: format {record.get('format')!r}, this version reads {FORMAT}; export again")
        models, fitted = fitted_blend(record["blend"], path)
        decodings = [Decoding.from_record(d) for d in record["decodings"]]
        members = tuple(FoldMember(m["key"], m["model"], int(m["fold"]), folder / m["file"],
                                   decodings[m["decoding"]], ModelInput.from_record(m["input"]))
                        for m in record["members"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise PredictError(f"{path}: not a readable export ({type(err).__name__}: {err}); export again") from None
    missing = [m.weights for m in members if not m.weights.is_file()]
    if missing:
        raise PredictError(f"{missing[0]}: fold weights missing ({len(missing)} of {len(members)} ONNX files); "
                           "export again")
    return Ensemble(folder, record["blend"], models, fitted, members)


def readme(ensemble: Ensemble, record: dict) -> str:
    blend = record["blend"]
    return f"""# maskfold ensemble: {blend['method']}

Exported from `{record['source']}` on {record['created']}: {len(record['members'])} fold models of
{', '.join(ensemble.weighted())}, and the blend fitted on their OOF predictions.

```bash
python -m orchestrator.predict PHOTOS... --exported {{this folder}} [--out predictions.csv] [--probs]
```

That runs on onnxruntime alone (`pip install onnxruntime==1.32.0`, or `onnxruntime-gpu` for CUDA);
no torch, timm or Ray is imported. Output: one row per photo with `class` (0..17 = mask*6 +
gender*3 + age band), `mask`, `gender`, `age` in words, `prob` and the face box used.

What `blend.json` holds, applied in this order:
- `decodings`: each photo decoded to `cache_size` (H, W) and, with `face`, cropped to the face
  (OpenCV Haar cascades, `margin`, `fallback`, `background`);
- `members[].input`: the model's eval pipeline (albumentations), resized to `input_size`, and
  flip TTA (`tta_flip`: the mean of the logits of the photo and of its mirror image);
- `members[].file`: the graph, opset 18: input `images` uint8 (batch, H, W, 3) RGB at
  `input_size`, output `logits` (batch, 18); the normalisation (`normalisation`) is inside it;
- `combine`: each model's logits are the mean of its fold models' logits;
- `blend`: the fitted method (`{blend['method']}`): per-model `weights` and `temperatures`,
  per-class `offsets` of the log-probabilities, `decode` joint or per attribute; a `hard` vote
  counts each model's predicted class by its weight.
"""
