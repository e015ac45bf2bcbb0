"""Training and inference for one job: the model (`model`), losses, device and
precision, one epoch (`loop`), data parallelism over ranks (`distributed`), prediction
(`inference`, with TTA views from `tta`), and OOF and test re-inference from saved fold weights
(`fold_models`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'build_model': 'model',
    'total_loss': 'losses',
    'select_device': 'device',
    'train_epoch': 'loop',
    'wrap_model': 'distributed',
    'predict_rows': 'inference',
    'load_fold_model': 'fold_models',
    'infer_test': 'fold_models',
    'infer_fold': 'fold_models',
    'mean_over_views': 'tta',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
