"""Release placement groups orphaned by dead Train controllers (ray issue 54305).

In Ray 2.60 a Train run's worker placement group outlives its controller when Tune ends
the trial abruptly, and Ray's own cleaner needs the dashboard's state API, which a
`ray[tune,train]` install does not have. The slot then stays taken and the next job
waits forever. The GCS table says which groups were made by actors that are now dead;
those are removed. This reads Ray internals: ray is pinned to 2.60.0 in requirements.txt.
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

SWEEP_SECONDS = 10
_warned = False


class PlacementSweeper(Callback):
    """A Tune callback on the driver: sweep when a trial fails or is stopped, and every
    SWEEP_SECONDS (a controller killed with its trial may be marked dead only later)."""

    def __init__(self):
        self.last_sweep = 0.0

    def on_trial_error(self, iteration, trials, trial, **info):
        self._sweep()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._sweep()

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self.last_sweep > SWEEP_SECONDS:
            self._sweep()

    def _sweep(self) -> None:
        self.last_sweep = time.time()
        released = release_orphaned_groups()
        if released:
            print(f"released {released} placement group(s) left by ended jobs", file=sys.stderr)


def orphaned_groups() -> list:
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    removed = gcs_pb2.PlacementGroupTableData.REMOVED
    out = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        group = gcs_pb2.PlacementGroupTableData.FromString(raw)
        creator = group.creator_actor_id.hex()
        # A nil creator (all f) is a group made by a driver, not by a Train controller.
        if (group.state != removed and not group.is_detached and group.creator_actor_dead
                and creator and set(creator) != {"f"}):
            out.append(group.placement_group_id)
    return out


def release_orphaned_groups() -> int:
    """Remove orphaned groups; returns how many. Never raises: a sweep is best effort."""
    global _warned
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    try:
        ids = orphaned_groups()
        for group_id in ids:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(group_id)))
        return len(ids)
    except Exception as err:  # internals moved: say so once, keep running
        if not _warned:
            print(f"warning: cannot sweep orphaned placement groups ({err})", file=sys.stderr)
            _warned = True
        return 0
