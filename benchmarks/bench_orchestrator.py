"""Makespan of one K-fold on the slots: the loop teams ran vs bare Ray tasks vs the shipped path.

    python -m benchmarks.bench_orchestrator [--folds 6] [--epochs 2] [--persons 60] [--vary preemption_watcher]

Every variant runs the same jobs: `tasks.job.train_job` for each (model, fold) of
experiments/demo.yaml shrunk to two tiny models, `--folds` folds and `--epochs` epochs, on a
synthetic dataset of `--persons` people written for the run (decode cache prepared once, before
anything is timed). Every job trains on one CPU thread, as it would on its slot.

(1) sequential, in this process (how competition teams ran their folds): T_seq is the sum of
    the job times, and ideal = T_seq / slots;
(2) bare Ray tasks, @ray.remote(num_cpus=1, resources={slot: 1}), all submitted at once;
(3) the shipped path: `orchestrator.cluster.launch.launch`, i.e. one long-lived worker per slot
    (a plain actor, `slot_worker.SlotProcess`) taking job after job from the driver's queue,
    each job's epochs checkpointed to its own folder in storage, the collector copying every
    job's outputs into results/ and the progress display, exactly as `python -m
    orchestrator.run` runs them;
(3t) the same with each slot a long-lived Train run (`slots.slot_trainer` -> TorchTrainer ->
    `slot_worker.slot_worker`), as data-parallel slots run and as every slot ran before;
(3b) (3t) with `--vary` changes made through the environment (default: none; e.g.
    `preemption_watcher`: RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1, Ray's default).

All Ray variants are timed from before their Ray session starts (the embedded Ray's start
is paid by both, as a user pays it). Per-job overhead = (makespan - ideal) / (jobs / slots).
A thread samples /proc every 0.2 s for the CPU seconds of every process of this run's Ray
(by process title), so the CPU the overhead takes from the work shows too: on a 2-core box
with 2 slots, every CPU-second of overhead is a second taken from a job or added to the
makespan.

Targets (issue 19): per-job overhead of (3) <= 2 s, and makespan(3) <= 1.2 x makespan(2).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

VARY_ENV = {"preemption_watcher": ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1"),
            "health_check_1s": ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1"),
            "no_train_metrics": ("RAY_TRAIN_METRICS_ENABLED", "0")}


# ---------------------------------------------------------------- CPU of every process of our Ray

STARTING = "idle pooled workers (never named)"
BEFORE_NAMED = "of which: before the process took its name (python start, imports, unpickling)"


class RayCpu:
    """Samples the CPU seconds of this process and all its descendants (GCS, raylet, agents, and
    the raylet's worker processes) every `interval` s. The CPU a process used since the last
    sample goes to what its title says it is now (a pooled worker can run a task, then become an
    actor); what it used before it first took a name (ray::IDLE while it starts and imports the
    actor's module) goes to that first name, and is also summed as BEFORE_NAMED. A process that
    exits loses at most its last `interval` of CPU."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.tick = interval, os.sysconf("SC_CLK_TCK")
        self.last: dict[tuple[int, int], float] = {}
        self.total: dict[str, float] = defaultdict(float)
        self.pending: dict[tuple[int, int], float] = {}  # CPU of processes not named yet
        self.named: set[tuple[int, int]] = set()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RayCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        procs, children = {}, defaultdict(list)
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(name)
            procs[pid] = (int(fields[19]), (int(fields[11]) + int(fields[12])) / self.tick)
            children[int(fields[1])].append(pid)
        tree, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        with self.lock:
            for pid in tree:
                if pid not in procs:
                    continue
                key, cpu = (pid, procs[pid][0]), procs[pid][1]
                delta, kind = cpu - self.last.get(key, 0.0), self._kind(pid)
                self.last[key] = cpu
                if kind != STARTING:
                    if key not in self.named:
                        self.named.add(key)
                        early = self.pending.pop(key, 0.0)  # only worker processes start unnamed
                        self.total[kind] += early
                        self.total[BEFORE_NAMED] += early
                    self.total[kind] += delta
                elif key in self.named:
                    self.total[STARTING] += delta  # an actor or task worker back in the pool
                else:
                    self.pending[key] = self.pending.get(key, 0.0) + delta

    @staticmethod
    def _kind(pid: int) -> str:
        if pid == os.getpid():
            return "driver (its loop, the slot runs' threads)"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return "other"
        title = argv[0].decode(errors="replace")
        if title.startswith("ray::"):
            name = title[5:].split(".")[0].split(" ")[0]
            return {"IDLE": STARTING, "ImplicitFunc": "Tune trial actor (ImplicitFunc)"}.get(name, name)
        if os.path.basename(title) in ("raylet", "gcs_server"):
            return "raylet + GCS"
        if any(arg.endswith(b"default_worker.py") for arg in argv):
            return STARTING  # named by its title once it runs something
        return "Ray agents, monitors"

    def snapshot(self) -> dict[str, float]:
        self.sample()
        with self.lock:
            out = dict(self.total)
            out[STARTING] = out.get(STARTING, 0.0) + sum(self.pending.values())
            return out

    @staticmethod
    def by_kind(before: dict, after: dict) -> dict[str, float]:
        return {kind: cpu - before.get(kind, 0.0) for kind, cpu in after.items()}


# ------------------------------------------------------------------------------------ the jobs

def make_experiment(tmp: Path, persons: int, folds: int, epochs: int):
    """The shrunk demo spec on fresh synthetic data, prepared (cache built, folds written)."""
    from tasks.data.preparation import prepare
    from tasks.spec.load import load_spec
    from tasks.synth.write import write_synth

    write_synth(tmp / "data", persons=persons, seed=0, size=(48, 64), workers=1)
    spec = load_spec("experiments/demo.yaml", [
        f"data.root={tmp / 'data'}", f"results_dir={tmp / 'results'}", "name=bench", f"folds.n_splits={folds}",
        f"train.epochs={epochs}", f"train.patience={epochs}", "train.tta_flip=false",
        "models=[{backbone: test_convnext}, {backbone: test_efficientnet}]", "resources.cpus_per_worker=1",
        "resources.slot=fake_gpu"]).resolved()
    return spec, prepare(spec, verbose=False)


def one_job(spec_json: dict, model: str, fold: int, out_dir: str) -> float:
    """train_job on one thread, as on a slot; returns its seconds."""
    import torch

    from tasks.job import train_job
    from tasks.job_io import Job
    from tasks.spec.experiment import Experiment

    torch.set_num_threads(1)
    started = time.perf_counter()
    train_job(Experiment.model_validate(spec_json), Job(model, fold, Path(out_dir)), log=lambda line: None)
    return time.perf_counter() - started


def sequential(spec, plans, out: Path) -> float:
    return sum(one_job(spec.model_dump(mode="json"), p.model, p.fold, str(out / p.job_id)) for p in plans)


def bare_tasks(spec, plans, out: Path, meter: RayCpu) -> tuple[float, dict]:
    import ray

    from orchestrator.cluster.session import ray_session

    before, started = meter.snapshot(), time.time()
    with ray_session(spec, None):
        task = ray.remote(num_cpus=1, resources={spec.resources.slot: 1})(one_job)
        ray.get([task.remote(spec.model_dump(mode="json"), p.model, p.fold, str(out / p.job_id)) for p in plans])
        return time.time() - started, meter.by_kind(before, meter.snapshot())


def shipped(spec, plans, storage: Path, meter: RayCpu, env: dict[str, str], runner: str) -> tuple[float, dict]:
    from orchestrator.cluster.launch import launch
    from orchestrator.cluster.slots import pool as slots

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # ray_session passes TRAIN_ENV overrides on to the controllers
    slots.ONE_WORKER_RUNNER = runner
    try:
        before, started = meter.snapshot(), time.time()
        launched = launch(spec, plans, str(storage), None, open(os.devnull, "w"))
        took = time.time() - started
    finally:
        slots.ONE_WORKER_RUNNER = "actor"
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    if set(launched.jobs("done")) != {p.job_id for p in plans}:
        raise RuntimeError(f"not every job finished: {launched.states}")
    return took, meter.by_kind(before, meter.snapshot())


# ------------------------------------------------------------------------------------- report

def print_tables(jobs: int, slots: int, t_seq: float, makespan: dict, cpu: dict, work_cpu: float) -> None:
    ideal, rounds = t_seq / slots, jobs / slots
    print(f"\n{jobs} jobs, {t_seq / jobs:.2f} s each alone on one thread, {slots} slots: ideal = T_seq / {slots} = "
          f"{ideal:.1f} s. Load average (1 min) at the end {os.getloadavg()[0]:.1f}.")
    print("\n| variant | makespan s | vs ideal | vs sequential | per-job overhead s |\n|---|---:|---:|---:|---:|")
    for name, value in {"(1) sequential loop in the driver": t_seq, **makespan}.items():
        overhead = (value - ideal) / rounds if not name.startswith("(1)") else float("nan")
        print(f"| {name} | {value:.1f} | {value / ideal:.2f}x | {value / t_seq:.2f}x | {overhead:.1f} |")
    kinds = sorted({k for c in cpu.values() for k in c if k != BEFORE_NAMED},
                   key=lambda k: -max(c.get(k, 0.0) for c in cpu.values()))
    print(f"\n| CPU seconds per job, by process | {' | '.join(cpu)} |\n|---|{'---:|' * len(cpu)}")
    for kind in kinds:
        values = [c.get(kind, 0.0) / jobs for c in cpu.values()]
        if max(values) >= 0.05:
            print(f"| {kind} | {' | '.join(f'{v:.2f}' for v in values)} |")
    totals = [sum(v for k, v in c.items() if k != BEFORE_NAMED) / jobs for c in cpu.values()]
    print(f"| **all of this Ray** | {' | '.join(f'{t:.2f}' for t in totals)} |")
    print(f"| **overhead = all - one job alone ({work_cpu:.2f})** | {' | '.join(f'{t - work_cpu:.2f}' for t in totals)} |")
    bare = next(v for k, v in makespan.items() if k.startswith("(2)"))
    for name, value in makespan.items():
        if name.startswith("(3"):
            overhead = (value - ideal) / rounds
            print(f"\n{name}: per-job overhead {overhead:.1f} s <= 2 s: {'yes' if overhead <= 2 else 'NO'}; "
                  f"makespan {value / bare:.2f} x bare tasks <= 1.2: {'yes' if value <= 1.2 * bare else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=6, help="folds; jobs = 2 models x folds (default 6)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--persons", type=int, default=60, help="synthetic training people (default 60)")
    parser.add_argument("--vary", default="", help=f"comma list for variant (3b): {', '.join(VARY_ENV)}")
    args = parser.parse_args(argv)
    vary = [v for v in args.vary.split(",") if v]
    if unknown := set(vary) - set(VARY_ENV):
        parser.error(f"unknown --vary {sorted(unknown)}; choose from {', '.join(VARY_ENV)}")
    from orchestrator.cluster.plan import plan_jobs
    from tasks.data.preparation import prepare, rows_hash

    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    os.environ["MASKFOLD_CACHE"] = str(tmp / "cache")  # a cache of the run's own, passed on to workers
    try:
        spec, dataset = make_experiment(tmp, args.persons, args.folds, args.epochs)
        plans = plan_jobs(spec, rows_hash(spec, dataset))
        slots = int(os.cpu_count() // spec.resources.cpus_per_worker)
        one = time.thread_time()
        t_seq = sequential(spec, plans, tmp / "seq")
        work_cpu = (time.thread_time() - one) / len(plans)
        print(f"(1) sequential: {t_seq:.1f} s for {len(plans)} jobs", flush=True)
        makespan, cpu = {}, {}
        with RayCpu() as meter:
            makespan[f"(2) bare Ray tasks, {slots} slots"], cpu["(2)"] = bare_tasks(spec, plans, tmp / "bare", meter)
            print(f"(2) bare tasks: {makespan[f'(2) bare Ray tasks, {slots} slots']:.1f} s", flush=True)
            variants = {"(3) shipped path (actor slots)": ({}, "actor"),
                        "(3t) slots as Train runs (before)": ({}, "train")}
            if vary:
                variants[f"(3b) Train slots with {' + '.join(vary)}"] = (dict(VARY_ENV[v] for v in vary), "train")
            for i, (name, (env, runner)) in enumerate(variants.items()):
                run = spec.model_copy(update={"results_dir": tmp / f"shipped{i}"})
                run_plans = plan_jobs(run, rows_hash(run, prepare(run, verbose=False)))  # same jobs, own folder
                makespan[name], cpu[name.split()[0]] = shipped(run, run_plans, tmp / f"storage{i}", meter, env, runner)
                print(f"{name}: {makespan[name]:.1f} s", flush=True)
        print_tables(len(plans), slots, t_seq, makespan, cpu, work_cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
