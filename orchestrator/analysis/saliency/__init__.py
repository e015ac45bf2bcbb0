"""Where the models look: Grad-CAM (`cam`) on chosen photos (`selection`), over
each fold's face box (`boxes`), drawn (`figures`), its own files (`files`), and
the whole of `explain` (`pipeline`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'explain': 'pipeline',
    'explain_job': 'selection',
    'grad_cams': 'cam',
    'face_focus': 'cam',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
