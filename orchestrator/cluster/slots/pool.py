"""Slots: one long-lived worker process per slot, taking job after job from the driver's queue.

Ray Train starts a run's controller, placement group and worker processes in ~20-28 s; a
run per job paid that for every job. A slot pays its start once: its worker trains jobs until
the queue is empty (orchestrator.cluster.slots.worker). A one-worker slot is a plain Ray
actor; a data-parallel slot (`workers_per_job` > 1) is a long-lived Train run, for its
process group and worker-group restarts. Either way:
- a worker process or its node that dies ends the slot with an error; the pool releases its
  job (the queue hands it to the next slot to ask, or, when a slot stays silent, reclaims it)
  and the job resumes from its own last epoch in storage;
- the slot resource and `accelerator_type` pin the workers to GPUs.

The driver owns each slot's actor or Train controller (a thread of it waits on it), so the
slots' processes end with the driver's Ray session: on Ctrl-C, or if the driver is killed.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

from orchestrator.cluster.slots.config import worker_resources
from orchestrator.cluster.slots.queue import JobQueue
from tasks.spec.experiment import ResourcesSpec

START_RETRIES = 3  # attempts to start a slot's worker group (each waits for a free slot, see TRAIN_ENV)
RUN_RESTARTS = 3  # a slot's run that dies as a whole (not its workers) is started again this often
HEAD = {"node:__internal_head__": 0.001}


def run_slot(queue, slot: str, run_name: str, res: ResourcesSpec, storage: str, limits: dict, restarts: int,
             local: bool) -> None:
    """One slot, until the queue has nothing more for it (a thread of the driver): a plain
    actor for one worker per job, a Train run for data-parallel jobs."""
    config = {"queue": queue, "slot": slot, **limits}
    if res.workers_per_job == 1 and ONE_WORKER_RUNNER == "actor":
        serve_on_actor(queue, slot, res, config)
    else:
        slot_trainer(res, config, run_name, storage, restarts, local, callbacks=[_registrar(queue, slot)]).fit()


# How a one-worker slot runs. A Train run starts a controller, a synchronisation actor and a
# placement group before its worker (about 5 CPU-s more per slot, and the worker's start
# waits on the controller's); a plain actor is the one process the slot needs. Train's
# worker-group restart is replaced by the queue: a dead actor ends `serve` with an error, the
# pool releases the slot's job and starts the slot again (benchmarks/bench_orchestrator.py
# measures both; "train" here runs one-worker slots as Train runs).
ONE_WORKER_RUNNER = "actor"


def serve_on_actor(queue, slot: str, res: ResourcesSpec, config: dict) -> None:
    """The slot's actor serves until the queue is done or the process should be replaced, then
    goes (its memory, and on a GPU its CUDA context, with it)."""
    import ray

    from orchestrator.cluster.slots.worker import SlotProcess

    extra = {k: v for k, v in worker_resources(res).items() if k != "CPU"}
    actor = ray.remote(SlotProcess).options(
        num_cpus=res.cpus_per_worker, num_gpus=1 if res.slot == "GPU" else 0, resources=extra,
        max_restarts=0, max_task_retries=0).remote()
    ray.get(queue.register_controller.remote(slot, [ray.put(actor)]))  # so that shutdown can stop it
    try:
        ray.get(actor.serve.remote(config))
    finally:
        ray.kill(actor, no_restart=True)


def slot_trainer(res: ResourcesSpec, config: dict, run_name: str, storage: str, restarts: int, local: bool,
                 callbacks: list | None = None):
    """A slot's TorchTrainer: its workers on the slot resource, its bounded restarts."""
    import ray.train

    from orchestrator.cluster.slots.loopback import LoopbackTorchConfig
    from orchestrator.cluster.slots.worker import slot_worker

    return _slot_trainer_class()(
        slot_worker,
        train_loop_config=config,
        # The embedded Ray listens on loopback only; so does the slot's process group there.
        torch_config=LoopbackTorchConfig() if local else None,
        scaling_config=ray.train.ScalingConfig(num_workers=res.workers_per_job, use_gpu=res.slot == "GPU",
                                               resources_per_worker=worker_resources(res)),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage,
            # Each job's attempts are bounded by the queue (resources.max_failures); this bounds
            # the run's restarts by the same budget over all the jobs it may take. Ray's default
            # for starting the workers, -1, retries forever: the driver would hang.
            failure_config=ray.train.FailureConfig(max_failures=restarts, controller_failure_limit=START_RETRIES),
            callbacks=callbacks or []),
    )


def _registrar(queue, slot: str):
    """A controller callback that gives the queue the controller's handle as the run starts:
    the thread waiting on a run cannot stop it, and the driver's Ray must not shut down under
    a thread still waiting (its process would exit). Killing the controller ends the run, and
    its worker group with it (the controller owns them)."""
    from ray.train.v2._internal.execution.callback import ControllerCallback

    class RegisterController(ControllerCallback):
        def after_controller_start(self, train_run_context) -> None:
            import ray

            queue.register_controller.remote(slot, [ray.put(ray.get_runtime_context().current_actor)])

    return RegisterController()


# Train callbacks that start an actor process per run and do nothing for maskfold: the
# datasets actor (no Ray Data here) and the placement-group cleaner, which polls the state
# API of a dashboard the embedded Ray does not start (orchestrator.cluster.slots.placement sweeps
# orphaned groups instead). A private method: ray is pinned.
UNUSED_CALLBACKS = ("DatasetsCallback", "PlacementGroupCleanerCallback")


def _slot_trainer_class():
    from ray.train.torch import TorchTrainer

    class SlotTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if type(c).__name__ not in UNUSED_CALLBACKS]

    return SlotTrainer


@dataclass(frozen=True)
class Polled:
    states: dict[str, str]  # job -> done, failed, cancelled, running or queued
    events: list[dict]


@dataclass
class SlotRun:
    slot: str
    thread: threading.Thread
    error: list[str] = field(default_factory=list)  # the run's exception, once it ended with one

    def target(self, *args) -> None:
        try:
            run_slot(*args)
        except Exception as err:  # ended abnormally: the pool says so and may start it again
            lines = str(getattr(err, "cause", None) or err).strip().splitlines()
            self.error.append(lines[-1] if lines else type(err).__name__)


class SlotPool:
    """The driver's side: the queue actor, and `slots` slot runs (each a thread of the driver
    waiting on its run's controller) kept going while jobs wait for a slot."""

    def __init__(self, res: ResourcesSpec, storage: str, slots: int, jobs: int, local: bool, log=None):
        self.res, self.storage, self.slots, self.local = res, storage, slots, local
        self.restarts = res.max_failures * max(jobs, 1) + 2
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.runs: dict[str, SlotRun] = {}
        self.failures: dict[str, int] = {}
        self.last_error = ""  # why a slot's run failed last, for jobs no slot could take
        self.generation = 0
        self.queue = None
        self.lock = threading.Lock()  # a search's keeper thread and its driver both call maintain

    def start(self, name: str | None = None) -> SlotPool:
        import ray

        # One thread: calls run in the order they arrive, so a job's events keep their order.
        self.queue = ray.remote(JobQueue).options(num_cpus=0, resources=HEAD, max_concurrency=1,
                                                  **({"name": name} if name else {})).remote(self.res.max_failures)
        return self

    def submit(self, configs: list[dict], last: bool = False) -> None:
        import ray

        calls = [self.queue.submit.remote(configs)] + ([self.queue.finish_submitting.remote()] if last else [])
        with self.lock:
            # The first slots start while the queue's own process is still starting, not after.
            self._fill(len(configs) if not self.runs and not self.failures else 0)
        ray.get(calls)
        self.maintain()

    def poll(self, channel: str = "run") -> Polled:
        """Every job's state and `channel`'s new events, in one call to the queue; slots are
        replaced or started as those states need."""
        import ray

        got = ray.get(self.queue.poll.remote(channel))
        self.maintain(got["states"])
        return Polled(got["states"], got["events"])

    def states(self) -> dict[str, str]:
        import ray

        return ray.get(self.queue.states.remote())

    def maintain(self, states: dict[str, str] | None = None) -> None:
        """Note ended slot runs; start runs while queued jobs lack a slot."""
        import ray

        with self.lock:
            for run in [r for r in self.runs.values() if not r.thread.is_alive()]:
                del self.runs[run.slot]
                if run.error:
                    self.failures[run.slot] = self.failures.get(run.slot, 0) + 1
                    self.last_error = run.error[0]
                    ray.get(self.queue.release.remote(run.slot, run.error[0]))
                    self.log(f"slot {run.slot}: its worker process ended with an error ({run.error[0][:200]})")
                    _sweep()
                    states = None  # the released job is queued again
            if len(self.runs) < self.slots:
                states = states if states is not None else self.states()
                self._fill(sum(1 for s in states.values() if s == "queued"))

    def _fill(self, queued: int) -> None:
        """Start slots, one per queued job, up to `slots` running."""
        for i in range(self.slots):
            slot = f"slot{i}"
            if queued <= 0:
                break
            if slot in self.runs or self.failures.get(slot, 0) > RUN_RESTARTS:
                continue
            self._launch(slot)
            queued -= 1

    def _launch(self, slot: str) -> None:
        self.generation += 1
        limits = {"max_jobs": self.res.slot_jobs, "max_rss_gb": self.res.slot_memory_gb}
        run_name = f"{slot}-{time.strftime('%Y%m%d-%H%M%S')}-{self.generation}"
        run = SlotRun(slot, threading.Thread(daemon=True))
        run.thread = threading.Thread(target=run.target, daemon=True, name=run_name,
                                      args=(self.queue, slot, run_name, self.res, self.storage, limits, self.restarts,
                                            self.local))
        self.runs[slot] = run
        run.thread.start()

    def alive(self) -> bool:
        """Slot runs remain, or could still be started for queued jobs."""
        return bool(self.runs) or any(self.failures.get(f"slot{i}", 0) <= RUN_RESTARTS for i in range(self.slots))

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop handing out jobs and give the runs `grace_s` to end; the rest end with the
        driver's Ray session, which owns their controllers and so their workers."""
        import ray

        if self.queue is None:
            return
        try:
            ray.get(self.queue.stop.remote())
        except Exception:  # the queue's node is gone: the runs end with the session all the same
            pass
        deadline = time.monotonic() + grace_s
        for run in list(self.runs.values()):
            run.thread.join(max(0.0, deadline - time.monotonic()))
        left = [r for r in self.runs.values() if r.thread.is_alive()]
        if left:
            boxed = ray.get(self.queue.controllers.remote([r.slot for r in left]))
            for controller in ray.get([box[0] for box in boxed]):
                ray.kill(controller, no_restart=True)
            for run in left:
                run.thread.join(30)
            _sweep()
        self.runs.clear()


def _sweep() -> None:
    from orchestrator.cluster.slots.placement import release_orphaned_groups

    release_orphaned_groups()
