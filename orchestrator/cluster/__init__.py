"""The Ray side: the only package that imports Ray.

- `plan` (the job matrix), `session` (the Ray session), `launch` (the driver's loop);
- `slots`: long-lived slot processes that run job after job;
- `collect`, `gather`, `progress`, `storage`, `reinfer`, `cam_tasks`;
- `experiment_run` (one experiment end to end), `tuning` (the search; one trial in
  `trial`, Tune's state checked in `tune_trust`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'run_experiment': 'experiment_run',
    'plan_jobs': 'plan',
    'ray_session': 'session',
    'run_search': 'tuning',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
