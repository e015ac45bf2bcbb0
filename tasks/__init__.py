"""What runs inside one job, importable without Ray or the orchestrator.

- `spec`: the typed experiment spec, its YAML loader and `--set` overrides;
- `data`: indexing the competition's folders, relabels, duplicates, person folds, the
  decode-once image cache, batches, and `prepare` (all of it for one experiment);
- `faces`: the face crop (detector, boxes, the crop itself, its outputs);
- `synth`: the synthetic dataset in the competition's layout (`python -m tasks.synth`);
- `pseudo`: a second round's pseudo-labelled eval photos, per fold;
- `train`: model, losses, device, one epoch, data parallelism, inference;
- the job itself (`job.train_job`), its files (`job_io`), the logits schema (`logits`),
  labels, metrics, tracking, and the shared plumbing (`atomic`, `errors`, `lock`, `user_files`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'train_job': 'job',
    'Job': 'job_io',
    'JobResult': 'job_io',
    'UserError': 'errors',
    'read_logits': 'logits',
    'write_logits': 'logits',
    'score': 'metrics',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
