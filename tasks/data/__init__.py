"""The data of one experiment: the competition's folders indexed (`dataset`), the
relabel table, duplicate photos, person-level stratified folds, the decode-once
image cache, training batches, and `prepare`, which does all of it once per run.
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'prepare': 'preparation',
    'load_dataset': 'preparation',
    'Dataset': 'preparation',
    'index_train': 'dataset',
    'index_eval': 'dataset',
    'DataError': 'dataset',
    'make_folds': 'folds',
    'load_folds': 'folds',
    'ensure_cache': 'cache',
    'ImageCache': 'cache',
    'make_loader': 'batches',
    'find_duplicates': 'duplicates',
    'read_relabel_table': 'relabel',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
