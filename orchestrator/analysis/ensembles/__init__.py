"""The blend: ensemble methods on probabilities (`methods`), per-attribute weights over
all-class models and specialists (`attributes`), fitting them on OOF logits with a nested
estimate (`fitting`), the baselines a choice is compared with (`baselines`), person-bootstrap
intervals (`uncertainty`), several experiments as one pool (`pooled`), and its files (`outputs`).
A method's name, its description and the methods a spec plans live in `recipes`; a fitted
method saves and loads itself (`FittedBlend.to_record` / `from_record`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'fit_blend': 'fitting',
    'plan_recipes': 'recipes',
    'recipe_named': 'recipes',
    'describe_method': 'recipes',
    'fit_all': 'fitting',
    'predict_nested': 'fitting',
    'FittedBlend': 'fitting',
    'BlendResult': 'fitting',
    'write_blend': 'outputs',
    'load_pool': 'pooled',
    'person_bootstrap': 'uncertainty',
    'blend_probs': 'methods',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
