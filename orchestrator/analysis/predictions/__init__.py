"""A chosen ensemble outside the competition: the blend of a results folder and its fold models
(`ensemble`), their logits of new photos through the fitted blend (`combine`), the whole run and
its table (`flow`), and the exported folder (`exported`: ONNX graphs and blend.json, read
without torch). The torch and onnxruntime runners are tasks/serving/; Ray's is
`ray_runner` in orchestrator/cluster/fold_tasks.py.
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'load_ensemble': 'ensemble',
    'Ensemble': 'ensemble',
    'PredictError': 'ensemble',
    'blend_logits': 'combine',
    'predict_photos': 'flow',
    'write_exported': 'exported',
    'read_exported': 'exported',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
