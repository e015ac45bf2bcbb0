"""The driver's queue of jobs for the slots: who trains what, how often it was tried, and the
events the jobs send back. A plain class, run as one Ray actor on the head node.

A slot (one long-lived worker process, orchestrator.cluster.slots.pool) asks `take` for work, trains
the job it gets, and asks again. Every rank of a slot gets the same job: the slot's current
assignment is handed out until the slot asks for the one after it. A data-parallel slot
whose worker group Train restarted (a process killed, a node lost) asks with `after=None` and
gets its open job back, to resume from its last epoch; a one-worker slot whose actor died is
released by the pool (`release`), its job queued for the next slot to ask. Each such end
counts as an attempt. A slot
silent for `lost_after` seconds (its node gone, its restart waiting for a free slot) loses
its job to the queue, so that another slot can take it.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

LOST_AFTER_S = 20.0  # workers beat every HEARTBEAT_S; a slot silent this long has lost its job
HEARTBEAT_S = 2.0


@dataclass
class Slot:
    current: str | None = None  # the job its ranks train now
    group: str = ""  # the worker group (one start of its ranks) that asked last
    beat: float = field(default_factory=time.monotonic)


class JobQueue:
    def __init__(self, max_failures: int, lost_after: float = LOST_AFTER_S):
        self.max_attempts = max_failures + 1
        self.lost_after = lost_after
        self.configs: dict[str, dict] = {}
        self.pending: deque[str] = deque()
        self.slots: dict[str, Slot] = {}
        self.attempts: dict[str, int] = {}
        self.closed: dict[str, str] = {}  # job -> done, failed or cancelled
        self.events: dict[str, list[dict]] = {}  # channel -> events not yet drained
        self.cancelled: set[str] = set()
        self.no_more = False  # every job is submitted: idle slots may end
        self.stopping = False  # Ctrl-C: hand out nothing more
        self.controller_of: dict[str, list] = {}

    # -- the driver (and a search's trials) --------------------------------------------------

    def submit(self, configs: list[dict]) -> None:
        """Queue jobs in order (longest first); a job already queued or open is left as it is."""
        for config in configs:
            job = config["job_id"]
            self.configs[job] = config
            self.cancelled.discard(job)
            if job not in self.pending and not self._holder(job):
                self.closed.pop(job, None)
                self.pending.append(job)

    def drain(self, channel: str) -> list[dict]:
        """The events sent on `channel` since the last call, in the order they arrived."""
        self._reclaim_silent()
        return self.events.pop(channel, [])

    def poll(self, channel: str) -> dict:
        """The driver's one call per tick: every job's state, then `channel`'s new events (a job
        closed in these states has its last event among these events)."""
        self._reclaim_silent()
        return {"states": self.states(), "events": self.events.pop(channel, [])}

    def cancel(self, channel: str) -> int:
        """Drop `channel`'s queued jobs; its running ones stop at their next epoch's end."""
        jobs = [j for j, c in self.configs.items() if c.get("channel") == channel and j not in self.closed]
        for job in jobs:
            self.cancelled.add(job)
            if job in self.pending:
                self.pending.remove(job)
                self._close(job, "cancelled", {})
        return len(jobs)

    def finish_submitting(self) -> None:
        self.no_more = True

    def stop(self) -> None:
        self.stopping = True

    def open_jobs(self) -> int:
        """Jobs submitted and not yet done, failed or cancelled."""
        return sum(1 for job in self.configs if job not in self.closed)

    def states(self) -> dict[str, str]:
        """Every submitted job: done, failed, cancelled, running (held by a slot) or queued."""
        held = {s.current for s in self.slots.values() if s.current}
        return {job: self.closed.get(job) or ("running" if job in held else "queued") for job in self.configs}

    def register_controller(self, slot: str, boxed: list) -> None:
        """What ends the slot's process (SlotPool.shutdown): [a reference to its actor's handle,
        or its Train run's controller's]. Boxed, so that this process never unpickles a handle:
        that would import the actor's class, with torch (3-4 CPU-s here, for nothing)."""
        self.controller_of[slot] = boxed

    def controllers(self, slots: list[str]) -> list:
        return [self.controller_of[s] for s in slots if s in self.controller_of]

    def release(self, slot: str, error: str) -> None:
        """The slot's process ended abnormally: its open job goes back to the queue."""
        self._drop(slot, f"its slot's worker process failed: {error}")

    # -- the slots -------------------------------------------------------------------------

    def take(self, slot: str, after: str | None, group: str) -> dict:
        """{"job": config} to train, {"wait": True} to ask again shortly, or {"done": True}.
        `group`: the asking worker group's id (every rank of one start of the slot's workers
        shares it), so that a restarted group is told from a second rank of the same one."""
        self._reclaim_silent()
        state = self.slots.setdefault(slot, Slot())
        state.beat = time.monotonic()
        restarted, state.group = state.group != group, group
        current = state.current
        if current is not None and current not in self.closed and current != after:
            if restarted:  # Train restarted this slot's worker group mid-job
                self.attempts[current] += 1
                if self.attempts[current] > self.max_attempts:
                    self._close(current, "failed", {"error": f"its worker was lost {self.max_attempts} times"})
                    state.current = None
                    return self.take(slot, after, group)
                self._event(current, "retry", {"attempt": self.attempts[current], "slot": slot})
            return {"job": self.configs[current], "attempt": self.attempts[current]}
        state.current = None
        while self.pending and not self.stopping:
            job = self.pending.popleft()
            if job in self.cancelled:
                continue
            state.current = job
            self.attempts[job] = self.attempts.get(job, 0) + 1
            return {"job": self.configs[job], "attempt": self.attempts[job]}
        if self.stopping or (self.no_more and not self._unassigned_open()):
            return {"done": True}
        return {"wait": True}

    def beat(self, slot: str, job: str | None) -> bool:
        """A slot's heartbeat; False when `job` is no longer its own (reclaimed or cancelled)."""
        state = self.slots.setdefault(slot, Slot())
        state.beat = time.monotonic()
        return job is None or (state.current == job and job not in self.cancelled and job not in self.closed)

    def event(self, job: str, kind: str, payload: dict) -> None:
        """A job's event (started, epoch, error); `final` and `failed` also close the job."""
        if kind == "final":
            self._close(job, "done", payload)
        elif kind == "failed":
            self._fail_attempt(job, payload)
        elif kind == "cancelled":
            self._close(job, "cancelled", payload)
        else:
            self._event(job, kind, payload)

    # -- machinery -------------------------------------------------------------------------

    def _fail_attempt(self, job: str, payload: dict) -> None:
        """A job raised: try it again (from its last epoch) while attempts remain."""
        for state in self.slots.values():
            if state.current == job:
                state.current = None
        if self.attempts.get(job, 0) < self.max_attempts and not self.stopping and job not in self.cancelled:
            self._event(job, "error", payload | {"retry": True})
            self.pending.appendleft(job)
        else:
            self._close(job, "failed", payload)

    def _close(self, job: str, state: str, payload: dict) -> None:
        if job in self.closed:
            return
        self.closed[job] = state
        self._event(job, state if state != "done" else "final", payload)

    def _event(self, job: str, kind: str, payload: dict) -> None:
        channel = self.configs.get(job, {}).get("channel", "run")
        self.events.setdefault(channel, []).append({"job_id": job, "kind": kind, **payload})

    def _holder(self, job: str) -> str | None:
        return next((name for name, s in self.slots.items() if s.current == job), None)

    def _unassigned_open(self) -> bool:
        """Open jobs that no slot holds: a slot may still have to take them."""
        held = {s.current for s in self.slots.values()}
        return any(job not in self.closed and job not in held and job not in self.cancelled for job in self.configs)

    def _drop(self, slot: str, why: str) -> None:
        state = self.slots.get(slot)
        if state is None or state.current is None or state.current in self.closed:
            return
        job, state.current = state.current, None
        if self.attempts.get(job, 0) >= self.max_attempts:
            self._close(job, "failed", {"error": why})
        elif job not in self.cancelled:
            self._event(job, "requeued", {"why": why})
            self.pending.appendleft(job)

    def _reclaim_silent(self) -> None:
        now = time.monotonic()
        for name, state in self.slots.items():
            if state.current is not None and now - state.beat > self.lost_after:
                self._drop(name, f"its slot {name} was silent for {now - state.beat:.0f} s (node lost?)")
