"""Predicting new photos with a finished experiment's fold models: the photos named on the
command line (`photos`), decoded and cropped as the eval photos were (`images`), the fold models
(`members`) run with torch (`local`) or, exported (`onnx_export`), on onnxruntime alone
(`onnx_runner`, which imports no torch). The blend on top is orchestrator/analysis/predictions/.
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'collect_photos': 'photos',
    'PhotoError': 'photos',
    'decode_photos': 'images',
    'Decoding': 'images',
    'FoldMember': 'members',
    'ModelInput': 'members',
    'torch_logits': 'local',
    'export_member': 'onnx_export',
    'onnx_logits': 'onnx_runner',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
