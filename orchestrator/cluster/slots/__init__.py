"""Slots: one long-lived process per GPU slot that runs job after job. The pool
(`pool`) starts and replaces them; the driver's queue actor (`queue`) hands
out jobs longest first; the slot's loop (`worker`) runs each, with its epoch
checkpoints in Train storage (`store`); a job's config and resources
(`config`); a local data-parallel slot's loopback process group (`loopback`);
orphaned placement groups (`placement`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'SlotPool': 'pool',
    'JobQueue': 'queue',
    'JobStore': 'store',
    'SlotProcess': 'worker',
    'job_config': 'config',
    'PlacementSweeper': 'placement',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
