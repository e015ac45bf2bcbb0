"""The Ray-free side: everything read from a results folder.

- `results_folder` (finding and checking an experiment's folder), `results` (its logits, checked
  by `logits_checks`), `specialists` (attribute specialists' logits), `repeats` (repeated folds);
- `ensembles`: the blend (methods, fitting, nested estimate, outputs, pooled rounds);
- `mislabels`: the label audit;
- `reporting`: the one-page report;
- `saliency`: Grad-CAM and face focus (`explain`);
- `pseudo_labels`: round 1's blend turned into a second round's labels;
- `search_outputs`, `tracking_logs`.
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'load_experiment': 'results_folder',
    'find_experiment': 'results_folder',
    'load_blend_inputs': 'results',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
