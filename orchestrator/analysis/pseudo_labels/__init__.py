"""Pseudo labels for a second round from round 1's blend (`labelling`), and
their files and plot (`outputs`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'build_pseudo': 'labelling',
    'write_sets': 'outputs',
    'plot_pseudo': 'outputs',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
