"""Makespan of N fixed-work jobs on the slots: sequential loop vs bare Ray tasks vs the orchestrator's path.

    python -m benchmarks.bench_orchestrator [--jobs 12] [--work-seconds 3] [--epochs 3] [--trivial 2]
                                            [--vary no_reuse_actors,preemption_watcher | --vary none]

About 6.5-7.5 min on a 2-core box with the defaults (measured: 6m44s-7m41s): (3) and (3b)
alone take ~4.5 min because of the very overhead they measure (~20 s per job on 2 cores);
`--vary none` drops (3b) and takes ~4.5-5 min.

Every job is the same fixed CPU work: a torch matmul loop pinned to 1 thread, calibrated once
at start to `--work-seconds`, so that every job runs the same number of iterations. In one run:

(1) a plain sequential loop in this process, before Ray starts (how competition teams ran
    their folds): the sum of the job times is T_seq, and ideal = T_seq / slots;
(2) bare Ray tasks, @ray.remote(num_cpus=1, resources={"fake_gpu": 1}), all submitted at once;
(3) the orchestrator's path: a Tune Tuner (max_concurrent_trials = slots) of function
    trainables with {"node:__internal_head__": 0.001}, each running one TorchTrainer with one
    worker of orchestrator.ray_jobs.worker_resources(...) = {"CPU": 1, "fake_gpu": 1},
    FailureConfig, CheckpointConfig(num_to_keep=1) and TuneReportCallback, inside
    orchestrator.ray_run.ray_session (the same local Ray, runtime env and
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.25). The trainable and the worker function are written
    here: they mirror ray_jobs.run_trial / train_worker but run the fixed work instead of
    tasks.job.train_job (no data, no model, no timm import), reporting once per epoch
    (`--epochs`) and then a final report with a small checkpoint. The LiveTable callback is
    left out. The orchestrator's overhead cuts are in (ray_run.tune_config and TRAIN_ENV):
    Tune reuses trial actors, Train runs no preemption watcher;
(3b) the same with the `--vary` changes (default: both cuts undone, i.e. Ray's defaults; also
    available: no_tune_report_callback, no_train_metrics, health_check_1s);
(4) per-job overhead: a trivial job (no work) as a bare task (3 times) and as
    TorchTrainer.fit() from the driver (`--trivial` times); `--trivial` rounds of trivial jobs
    through the whole Tune + TorchTrainer path, `slots` at a time, so Tuner wall / rounds is the
    per-job overhead in makespan terms; and the overhead inside (2)/(3) =
    (makespan - ideal) / (jobs / slots).

Where the overhead goes: the trainable and the Train worker write timestamps to files (a
per-job timeline), and a thread samples /proc every 0.2 s for the CPU seconds of every process
of this Ray (by process title: Tune trial actor, TrainController, RayTrainWorker, ...), so the
CPU the overhead takes from the work is measured too: on a 2-core box with 2 slots, every
CPU-second of overhead is a second taken from a job or added to the makespan.

Target: makespan(3) <= 1.15 x ideal + (jobs / slots) x the trivial per-job overhead of the
same path (a round of trivial Tune + TorchTrainer jobs, `slots` at a time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from tasks.spec import ResourcesSpec

MATRIX = 256
VARY = {
    "no_reuse_actors": "Tune TuneConfig(reuse_actors=False): a new trial actor process per job",
    "preemption_watcher": "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1: a PreemptionWatcher actor per job",
    "no_tune_report_callback": "no TuneReportCallback: no _QueueActor per job, no 0.2 s queue polling by the trial",
    "no_train_metrics": "RAY_TRAIN_METRICS_ENABLED=0: no controller/worker metrics callbacks",
    "health_check_1s": "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=1 instead of 0.25: fewer controller polls",
}
VARY_ENV = {"preemption_watcher": ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1"),
           "no_train_metrics": ("RAY_TRAIN_METRICS_ENABLED", "0"),
           "health_check_1s": ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")}


# ------------------------------------------------------------------------------ the fixed work

def work(iterations: int) -> tuple[float, float]:
    """The fixed CPU work: `iterations` 256x256 matmuls on 1 thread. Returns (wall s, CPU s)."""
    import torch

    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), time.thread_time()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(MATRIX, MATRIX, generator=g) / MATRIX**0.5
    x = torch.randn(MATRIX, MATRIX, generator=g)
    for _ in range(iterations):
        x = a @ x
        x = x / x.norm()
    return time.perf_counter() - wall, time.thread_time() - cpu


def calibrate(seconds: float) -> int:
    work(20)  # warm up
    probe = 100
    while True:
        took = work(probe)[0]
        if took > 0.5:
            return max(1, round(probe * seconds / took))
        probe *= 4


def process_start() -> float:
    """Wall-clock time this process was created (from /proc, no psutil)."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = int(next(line for line in f if line.startswith("btime")).split()[1])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


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

    def __enter__(self) -> "RayCpu":
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
            return "driver (Tune loop)"
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


# ------------------------------------------------------------------------- (3) the Train path

def bench_worker(config: dict) -> None:
    """Mirrors ray_jobs.train_worker: fixed work split in epochs, a report per epoch, a final
    report with a checkpoint; writes its timestamps for the breakdown."""
    fn_start = time.time()
    import ray.train

    node = ray.util.get_node_ip_address()
    epochs, iterations = config["epochs"], config["iterations"]
    work_s = work_cpu = report_s = 0.0
    for epoch in range(epochs):
        part = iterations // epochs + (1 if epoch < iterations % epochs else 0)
        took, cpu = work(part)
        work_s, work_cpu = work_s + took, work_cpu + cpu
        t = time.time()
        ray.train.report({"final": 0, "node": node, "epoch": epoch + 1, "epochs": epochs, "epoch_seconds": took})
        report_s += time.time() - t
    t = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "result.json").write_text(json.dumps({"seconds": work_s}))
        ray.train.report({"final": 1, "node": node, "epoch": epochs, "epochs": epochs, "seconds": work_s},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))
    report_s += time.time() - t
    _write(config, "worker", worker_proc=process_start(), fn_start=fn_start, fn_end=time.time(),
           work=work_s, work_cpu=work_cpu, report=report_s)


def make_trainer(config: dict):
    """The orchestrator's own TorchTrainer (ray_jobs.build_trainer) around the fixed work."""
    from orchestrator.cluster.worker import build_trainer

    callbacks = []
    if config.get("tune") and config.get("tune_report", True):
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = [TuneReportCallback()]
    return build_trainer(bench_worker, config, ResourcesSpec.model_validate(config["resources"]), callbacks)


def bench_trial(config: dict) -> None:
    """Mirrors ray_jobs.run_trial: the Tune function trainable, one TorchTrainer per job."""
    trial_start = time.time()
    config = config["job"]
    os.environ.update(config.get("env", {}))  # Train copies these to its controller and workers at fit()
    trainer = make_trainer(config)
    fit_start = time.time()
    trainer.fit()
    _write(config, "trial", trial_pid=os.getpid(), trial_proc=process_start(), trial_start=trial_start, fit_start=fit_start,
           fit_end=time.time())


def _write(config: dict, kind: str, **times) -> None:
    Path(config["timing"], f"{config['job_id']}.{kind}.json").write_text(json.dumps(times))


def _read(timing: Path, job_id: str) -> dict:
    out = {}
    for kind in ("trial", "worker"):
        path = timing / f"{job_id}.{kind}.json"
        if path.exists():
            out |= json.loads(path.read_text())
    return out


def run_tune(configs: list[dict], concurrent: int, name: str, storage: str, reuse_actors: bool = True) -> float:
    """The orchestrator's Tuner (ray_run.launch without the LiveTable); returns its wall time."""
    from ray import tune

    from orchestrator.cluster.launch import tune_config

    tuner = tune.Tuner(
        tune.with_resources(bench_trial, {"node:__internal_head__": 0.001}),
        param_space={"job": tune.grid_search([c | {"tune": True} for c in configs])},
        tune_config=replace(tune_config(concurrent), reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0),
    )
    started = time.time()
    grid = tuner.fit()
    took = time.time() - started
    errors = [r.error for r in grid if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} trials failed: {errors[0]}")
    return took


# ------------------------------------------------------------------------------- (2) bare tasks

def bare_work(iterations: int) -> dict:
    start = time.time()
    took, cpu = work(iterations)
    return {"start": start, "end": time.time(), "work": took, "work_cpu": cpu}


def bare_noop() -> float:
    return time.time()


# ------------------------------------------------------------------------------------- report

def med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


PHASES = {
    "trial actor process created -> trainable entered": lambda t: t["trial_start"] - t["trial_proc"],
    "trainable entered -> fit() called (build the TorchTrainer)": lambda t: t["fit_start"] - t["trial_start"],
    "fit() called -> Train worker process created (controller, placement group)":
        lambda t: t["worker_proc"] - t["fit_start"],
    "worker process created -> train fn entered (imports, torch backend)":
        lambda t: t["fn_start"] - t["worker_proc"],
    "train fn: the work": lambda t: t["work"],
    "train fn: ray.train.report calls (epochs + final checkpoint)": lambda t: t["report"],
    "train fn returned -> fit() returns (controller poll, worker group shutdown)":
        lambda t: t["fit_end"] - t["fn_end"],
}


def phases(timings: list[dict]) -> dict[str, float]:
    rows = [t for t in timings if {"trial_start", "fn_start"} <= t.keys()]
    out = {name: med(f(t) for t in rows) for name, f in PHASES.items()}
    # With reuse_actors a trial actor runs several trials: time only each process's first trial.
    first = {}
    for t in sorted(rows, key=lambda t: t["trial_start"]):
        first.setdefault((t["trial_pid"], t["trial_proc"]), t)
    name = next(iter(PHASES))
    out[name] = med(PHASES[name](t) for t in first.values())
    out["trial actor processes"] = len(first)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--work-seconds", type=float, default=3.0, help="CPU work per job")
    parser.add_argument("--epochs", type=int, default=3, help="reports per Train job")
    parser.add_argument("--trivial", type=int, default=2,
                        help="trivial TorchTrainer fits from the driver, and rounds of trivial Tune jobs")
    parser.add_argument("--vary", default="no_reuse_actors,preemption_watcher",
                        help=f"comma list of changes for variant (3b), or 'none' to skip it: {', '.join(VARY)}")
    parser.add_argument("--keep", action="store_true", help="keep the Ray storage and timing folder")
    args = parser.parse_args(argv)
    vary = [] if args.vary == "none" else [c for c in args.vary.split(",") if c]
    if unknown := set(vary) - set(VARY):
        parser.error(f"unknown changes {sorted(unknown)}; choose from {', '.join(VARY)}")

    # ---- (1) sequential, before Ray starts: nothing else of ours runs on the machine.
    loads = {"start": load()}
    iterations = calibrate(args.work_seconds)
    seq = [work(iterations) for _ in range(args.jobs)]
    t_seq = sum(s[0] for s in seq)
    job_s, job_cpu = t_seq / args.jobs, sum(s[1] for s in seq) / args.jobs
    print(f"calibrated {iterations} iterations; sequential: {t_seq:.1f} s "
          f"({job_s:.2f} s/job, {min(s[0] for s in seq):.2f}..{max(s[0] for s in seq):.2f}), load {load()}",
          flush=True)

    import ray

    from orchestrator.cluster.session import check_resources, ray_session

    res = ResourcesSpec(slot="fake_gpu", cpus_per_worker=1, workers_per_job=1, max_failures=2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    storage, timing = str(tmp / "storage"), tmp / "timing"
    timing.mkdir(parents=True)
    makespan, cpu, timings = {}, {}, {}
    started = time.time()
    try:
        with ray_session(SimpleNamespace(resources=res), None), RayCpu() as meter:
            slots = check_resources(res)
            ideal = t_seq / slots
            task = ray.remote(num_cpus=1, resources={res.slot: 1})
            loads["ray up"] = load()

            def configs(prefix: str, n: int, iters: int, env: dict | None = None, report: bool = True) -> list[dict]:
                return [{"job_id": f"{prefix}-{i:02d}", "iterations": iters, "epochs": args.epochs,
                         "resources": res.model_dump(mode="json"), "storage": storage, "timing": str(timing),
                         "env": env or {}, "tune_report": report} for i in range(n)]

            # ---- (2) bare tasks, all submitted at once; the slots queue them.
            before = meter.snapshot()
            t0 = time.time()
            bare = ray.get([task(bare_work).remote(iterations) for _ in range(args.jobs)])
            makespan["bare"] = time.time() - t0
            cpu["bare"] = meter.by_kind(before, meter.snapshot())
            bare_job = med(b["work"] for b in bare)
            print(f"(2) bare tasks: {makespan['bare']:.1f} s, load {load()}", flush=True)

            # ---- (3) the orchestrator's path, and (3b) with the changes.
            variants = {"train": ({}, True, True)}
            if vary:
                variants["cut"] = ({k: v for c in vary if c in VARY_ENV for k, v in [VARY_ENV[c]]},
                                   "no_reuse_actors" not in vary, "no_tune_report_callback" not in vary)
            for key, (env, reuse, report) in variants.items():
                jobs = configs(key, args.jobs, iterations, env, report)
                before = meter.snapshot()
                makespan[key] = run_tune(jobs, slots, f"bench-{key}", storage, reuse_actors=reuse)
                cpu[key] = meter.by_kind(before, meter.snapshot())
                timings[key] = [_read(timing, c["job_id"]) for c in jobs]
                print(f"({'3' if key == 'train' else '3b'}) Tune + TorchTrainer: {makespan[key]:.1f} s, "
                      f"load {load()}", flush=True)
                loads[f"after ({'3' if key == 'train' else '3b'})"] = load()

            # ---- (4) trivial jobs: bare task, TorchTrainer.fit() from the driver, whole Tune path.
            noop = task(bare_noop)
            bare_trivial = []
            for _ in range(3):
                t0 = time.time()
                ray.get(noop.remote())
                bare_trivial.append(time.time() - t0)
            fit_trivial = []
            for c in configs("fit", args.trivial, 0):
                t0 = time.time()
                make_trainer(c).fit()
                fit_trivial.append(time.time() - t0)
            print(f"(4) trivial TorchTrainer.fit() from the driver: {', '.join(f'{t:.1f}' for t in fit_trivial)} s, "
                  f"load {load()}", flush=True)
            trivial = configs("trivial", args.trivial * slots, 0)
            before = meter.snapshot()
            tune_trivial = run_tune(trivial, slots, "bench-trivial", storage) / args.trivial
            cpu["trivial"] = meter.by_kind(before, meter.snapshot())
            trivial_phases = phases([_read(timing, c["job_id"]) for c in trivial])
            loads["end"] = load()
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.time() - started

    # ------------------------------------------------------------------------------ the tables
    rounds = args.jobs / slots
    label = {"train": "(3)", "cut": "(3b)"}
    print(f"\n{args.jobs} jobs x {job_s:.2f} s of 1-thread CPU work ({iterations} iterations; Train jobs report "
          f"{args.epochs} epochs + 1 final with a checkpoint), {slots} slots, ideal = T_seq / {slots} = {ideal:.1f} s. "
          f"Ray part {total:.0f} s. Load average (1 min): {', '.join(f'{k} {v}' for k, v in loads.items())}.")
    if vary:
        print(f"(3b) changes: {'; '.join(VARY[c] for c in vary)}.")
    print("\n| variant | makespan s | vs ideal | vs sequential |\n|---|---:|---:|---:|")
    rows = {"(1) sequential loop in the driver": t_seq, f"(2) bare Ray tasks, {slots} slots": makespan["bare"],
            f"(3) Tune + TorchTrainer, orchestrator path, {slots} at a time": makespan["train"]}
    if "cut" in makespan:
        rows[f"(3b) = (3) with {' + '.join(vary)}"] = makespan["cut"]
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} | {value / ideal:.2f}x | {value / t_seq:.2f}x |")

    print("\n| per-job overhead | s |\n|---|---:|")
    print(f"| trivial bare task (median of 3; first {bare_trivial[0]:.3f}) | {med(bare_trivial):.3f} |")
    print(f"| trivial TorchTrainer.fit() from the driver (median of {args.trivial}) | {med(fit_trivial):.1f} |")
    print(f"| trivial jobs through Tune + TorchTrainer, {slots} at a time (Tuner wall / {args.trivial} rounds) | "
          f"{tune_trivial:.1f} |")
    for key, name in (("bare", "(2)"), ("train", "(3)"), ("cut", "(3b)")):
        if key in makespan:
            print(f"| inside {name}: (makespan - ideal) / (jobs / slots) | {(makespan[key] - ideal) / rounds:.1f} |")

    # ---- where a Train job's time goes: timeline per job, then CPU per process kind.
    keys = [k for k in ("train", "cut") if k in timings]
    head = " | ".join(label[k] for k in keys)
    print(f"\n| where a job's slot time goes (median per job) | {head} | trivial jobs |\n"
          f"|---|{'---:|' * (len(keys) + 1)}")
    table = {k: phases(timings[k]) for k in keys}
    for name in PHASES:
        print(f"| {name} | {' | '.join(f'{table[k][name]:.2f}' for k in keys)} | {trivial_phases[name]:.2f} |")
    name = "trial actor processes"
    print(f"| (trial actor processes started for the jobs; the first row times each one's first trial) | "
          f"{' | '.join(str(table[k][name]) for k in keys)} | {trivial_phases[name]} |")
    idle = {k: (makespan[k] * slots - sum(t["fit_end"] - t["trial_start"] for t in timings[k] if "fit_end" in t))
            / args.jobs for k in keys}
    print(f"| slot idle between trials, mean (Tune scheduling, trial actor start, Tuner start/end) | "
          f"{' | '.join(f'{idle[k]:.2f}' for k in keys)} | |")
    print(f"| total slot time per job = makespan x slots / jobs | "
          f"{' | '.join(f'{makespan[k] * slots / args.jobs:.2f}' for k in keys)} | {tune_trivial:.2f} |")
    in_train = " / ".join(f"{med(t['work'] for t in timings[k] if 'work' in t):.2f} s" for k in keys)
    in_train_cpu = " / ".join(f"{med(t['work_cpu'] for t in timings[k] if 'work_cpu' in t):.2f}" for k in keys)
    print(f"\nThe same work alone in the driver: {job_s:.2f} s ({job_cpu:.2f} CPU s); in a bare task: {bare_job:.2f} s; "
          f"in the Train worker {head}: {in_train} (its CPU: {in_train_cpu} s).")

    kinds = sorted({kind for c in cpu.values() for kind in c}, key=lambda k: -cpu.get("train", {}).get(k, 0.0))
    cols = [k for k in ("bare", "train", "cut", "trivial") if k in cpu]
    per = {"bare": args.jobs, "train": args.jobs, "cut": args.jobs, "trivial": args.trivial * slots}
    names = {"bare": "(2)", "train": "(3)", "cut": "(3b)", "trivial": "trivial jobs"}
    print(f"\n| CPU seconds per job, by process | {' | '.join(names[c] for c in cols)} |\n|---|{'---:|' * len(cols)}")
    for kind in [k for k in kinds if k != BEFORE_NAMED]:
        values = [cpu[c].get(kind, 0.0) / per[c] for c in cols]
        if max(values) >= 0.05:
            print(f"| {kind} | {' | '.join(f'{v:.2f}' for v in values)} |")
    totals = {c: sum(v for k, v in cpu[c].items() if k != BEFORE_NAMED) / per[c] for c in cols}
    print(f"| **all of this Ray** | {' | '.join(f'{totals[c]:.2f}' for c in cols)} |")
    work_cpu = {"bare": med(b["work_cpu"] for b in bare), "trivial": 0.0}
    work_cpu |= {k: med(t["work_cpu"] for t in timings[k] if "work_cpu" in t) for k in keys}
    print(f"| **overhead = all - the work's own CPU** | {' | '.join(f'{totals[c] - work_cpu[c]:.2f}' for c in cols)} |")
    print(f"| {BEFORE_NAMED}, all workers | {' | '.join(f'{cpu[c].get(BEFORE_NAMED, 0.0) / per[c]:.2f}' for c in cols)} |")

    allowed = 1.15 * ideal + rounds * tune_trivial
    for key in keys:
        print(f"\nmakespan {label[key]} {makespan[key]:.1f} s <= 1.15 x ideal {1.15 * ideal:.1f} s + jobs/slots "
              f"{rounds:g} x trivial per-job overhead {tune_trivial:.1f} s = {allowed:.1f} s: "
              f"{'yes' if makespan[key] <= allowed else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
