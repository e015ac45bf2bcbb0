"""Synthetic people in the competition's exact layout: `python -m tasks.synth OUT
--persons N --seed S --size WxH` (`write`), each person drawn (`draw`), and the
true face boxes of the drawings (`face_boxes`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'write_synth': 'write',
    'parse_size': 'write',
    'main': 'write',
    'render_person': 'draw',
    'write_face_boxes': 'face_boxes',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
