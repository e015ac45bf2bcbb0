"""The experiment spec: one pydantic model (`extra="forbid"`) read from YAML, with
its sections (augmentation, face crop, pseudo labels, search space, tracking), the checks
of attribute specialists (`specialists`), the loader that names the failing field path, and
the dotted `--set` overrides.
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'Experiment': 'experiment',
    'SpecError': 'experiment',
    'stable_hash': 'experiment',
    'load_spec': 'load',
    'apply_overrides': 'overrides',
    'SearchSpec': 'search_space',
    'sampled_spec': 'load',
    'FaceSpec': 'face',
    'PseudoSpec': 'pseudo',
    'TrackingSpec': 'tracking',
    'AugmentSpec': 'augment',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
