"""The label audit: people whose given labels the OOF predictions contradict
(`contradictions`), with calibrated suspicion (`suspects`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'audit_table': 'contradictions',
    'relabel_table': 'contradictions',
    'assess': 'suspects',
    'pick_review': 'suspects',
    'pick_suspects': 'suspects',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
