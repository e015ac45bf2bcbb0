"""The face crop: a detector (`detect`), boxes read from a file (`boxes`), the crop
itself with its margin and fallback (`crop`), and its table and misses (`outputs`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'face_crop': 'crop',
    'FaceCrop': 'crop',
    'make_detector': 'detect',
    'read_boxes': 'boxes',
    'write_faces': 'outputs',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
