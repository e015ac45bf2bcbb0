"""A second round's pseudo labels as a job reads them: each fold's pseudo-labelled
eval photos (`fold_sets`) and the checks that round 1's rows are this round's (`rows`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'PseudoSet': 'fold_sets',
    'read_pseudo': 'fold_sets',
    'write_pseudo': 'fold_sets',
    'pseudo_samples': 'fold_sets',
    'check_source_rows': 'rows',
    'check_round1_rows': 'rows',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
