"""Makespan of N fixed-work jobs on the slots: sequential loop vs bare Ray tasks vs the orchestrator's path.

    python -m benchmarks.bench_orchestrator [--jobs 12] [--work-seconds 4] [--epochs 3] [--trivial 3]

Every job is the same fixed CPU work: a torch matmul loop pinned to 1 thread, calibrated once
at start to `--work-seconds` so that each job runs the same number of iterations. In one run:

(1) a plain sequential loop in this process (how competition teams ran their folds); the sum
    of the job times is T_seq, and ideal = T_seq / slots;
(2) bare Ray tasks, @ray.remote(num_cpus=1, resources={"fake_gpu": 1}), all submitted at once;
(3) the orchestrator's path: a Tune Tuner (max_concurrent_trials = slots) of function
    trainables with {"node:__internal_head__": 0.001}, each running one TorchTrainer with one
    worker of orchestrator.ray_jobs.worker_resources(...) = {"CPU": 1, "fake_gpu": 1},
    FailureConfig, CheckpointConfig(num_to_keep=1) and TuneReportCallback, inside
    orchestrator.ray_run.ray_session (the same local Ray, runtime env and
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.25). The trainable and the worker function are written
    here: they mirror ray_jobs.run_trial / train_worker but run the fixed work instead of
    tasks.job.train_job (no data, no model, no timm import), reporting once per `--epochs`
    epoch and a final report with a small checkpoint. The LiveTable callback is left out;
(4) per-job overhead: a trivial job (no work) as a bare task, as TorchTrainer.fit() from the
    driver, and through the whole Tune + TorchTrainer path one job at a time, each `--trivial`
    times; and the overhead inside (2)/(3) = (makespan - ideal) / (jobs / slots).

The worker and the trainable write timestamps to files, which give a per-job breakdown of where
a Train job's overhead goes. Target: makespan(3) <= 1.15 x ideal + (jobs / slots) x the trivial
per-job overhead of the same path.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from tasks.spec import ResourcesSpec

MATRIX = 256


# ------------------------------------------------------------------------------ the fixed work

def work(iterations: int) -> float:
    """The fixed CPU work: `iterations` 256x256 matmuls on 1 thread. Returns its seconds."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(MATRIX, MATRIX, generator=g) / MATRIX**0.5
    x = torch.randn(MATRIX, MATRIX, generator=g)
    for _ in range(iterations):
        x = a @ x
        x = x / x.norm()
    return time.perf_counter() - started


def calibrate(seconds: float) -> int:
    work(20)  # warm up
    probe = 100
    while True:
        took = work(probe)
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


# ------------------------------------------------------------------------- (3) the Train path

def bench_worker(config: dict) -> None:
    """Mirrors ray_jobs.train_worker: fixed work split in epochs, a report per epoch, a final
    report with a checkpoint; writes its timestamps for the breakdown."""
    fn_start = time.time()
    import ray.train

    node = ray.util.get_node_ip_address()
    epochs, iterations = config["epochs"], config["iterations"]
    work_s = report_s = 0.0
    for epoch in range(epochs):
        part = iterations // epochs + (1 if epoch < iterations % epochs else 0)
        took = work(part)
        work_s += took
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
           work=work_s, report=report_s)


def make_trainer(config: dict):
    """Mirrors ray_jobs.run_trial's TorchTrainer (same scaling, failure, checkpoint configs)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from orchestrator.ray_jobs import worker_resources

    res = ResourcesSpec.model_validate(config["resources"])
    callbacks = []
    if config.get("tune"):
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = [TuneReportCallback()]
    return TorchTrainer(
        bench_worker, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=res.workers_per_job, use_gpu=res.slot == "GPU",
                                               resources_per_worker=worker_resources(res)),
        run_config=ray.train.RunConfig(
            name=config["job_id"], storage_path=config["storage"],
            failure_config=ray.train.FailureConfig(max_failures=res.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks),
    )


def bench_trial(config: dict) -> None:
    """Mirrors ray_jobs.run_trial: the Tune function trainable, one TorchTrainer per job."""
    trial_start = time.time()
    config = config["job"]
    trainer = make_trainer(config)
    fit_start = time.time()
    trainer.fit()
    _write(config, "trial", trial_proc=process_start(), trial_start=trial_start, fit_start=fit_start,
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


def run_tune(configs: list[dict], concurrent: int, name: str, storage: str) -> float:
    """The orchestrator's Tuner (ray_run.launch without the LiveTable); returns its wall time."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(bench_trial, {"node:__internal_head__": 0.001}),
        param_space={"job": tune.grid_search([c | {"tune": True} for c in configs])},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
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
    took = work(iterations)
    return {"start": start, "end": time.time(), "work": took}


def bare_noop() -> float:
    return time.time()


# ------------------------------------------------------------------------------------- report

def med(values) -> float:
    return statistics.median(values) if values else float("nan")


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--work-seconds", type=float, default=4.0, help="CPU work per job")
    parser.add_argument("--epochs", type=int, default=3, help="reports per Train job")
    parser.add_argument("--trivial", type=int, default=3, help="repeats of each trivial-job measurement")
    parser.add_argument("--keep", action="store_true", help="keep the Ray storage and timing folder")
    args = parser.parse_args(argv)

    # ---- (1) sequential, before Ray starts: nothing else of ours runs on the machine.
    loads = {"start": load()}
    iterations = calibrate(args.work_seconds)
    seq_times = [work(iterations) for _ in range(args.jobs)]
    t_seq = sum(seq_times)
    job_s = t_seq / args.jobs
    print(f"calibrated {iterations} iterations; sequential: {t_seq:.1f} s "
          f"({job_s:.2f} s/job, {min(seq_times):.2f}..{max(seq_times):.2f}), load {load()}", flush=True)

    import ray

    from orchestrator.ray_run import check_resources, ray_session

    res = ResourcesSpec(slot="fake_gpu", cpus_per_worker=1, workers_per_job=1, max_failures=2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    storage, timing = str(tmp / "storage"), tmp / "timing"
    timing.mkdir(parents=True)
    results: dict = {}
    started = time.time()
    try:
        with ray_session(SimpleNamespace(resources=res), None):
            slots = check_resources(res)
            ideal = t_seq / slots
            task = ray.remote(num_cpus=1, resources={res.slot: 1})
            loads["ray up"] = load()

            # ---- (2) bare tasks, all submitted at once; the slots queue them.
            t0 = time.time()
            bare = ray.get([task(bare_work).remote(iterations) for _ in range(args.jobs)])
            results["bare"] = time.time() - t0
            bare_job = med([b["work"] for b in bare])
            print(f"bare tasks: {results['bare']:.1f} s, load {load()}", flush=True)

            # ---- (3) the orchestrator's path.
            def configs(prefix: str, n: int, iters: int) -> list[dict]:
                return [{"job_id": f"{prefix}-{i:02d}", "iterations": iters, "epochs": args.epochs,
                         "resources": res.model_dump(mode="json"), "storage": storage, "timing": str(timing)}
                        for i in range(n)]

            jobs = configs("job", args.jobs, iterations)
            results["train"] = run_tune(jobs, slots, "bench-jobs", storage)
            timings = [_read(timing, c["job_id"]) for c in jobs]
            print(f"Tune + TorchTrainer: {results['train']:.1f} s, load {load()}", flush=True)
            loads["after (3)"] = load()

            # ---- (4) trivial jobs: bare task, TorchTrainer.fit() from the driver, whole Tune path.
            noop = task(bare_noop)
            bare_trivial = []
            for _ in range(args.trivial):
                t0 = time.time()
                ray.get(noop.remote())
                bare_trivial.append(time.time() - t0)
            fit_trivial = []
            for c in configs("fit", args.trivial, 0):
                t0 = time.time()
                make_trainer(c).fit()
                fit_trivial.append(time.time() - t0)
            print(f"trivial fit from the driver: {', '.join(f'{t:.1f}' for t in fit_trivial)} s, "
                  f"load {load()}", flush=True)
            trivial = configs("trivial", args.trivial, 0)
            tune_trivial = run_tune(trivial, 1, "bench-trivial", storage) / args.trivial
            trivial_timings = [_read(timing, c["job_id"]) for c in trivial]
            loads["end"] = load()
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.time() - started

    rounds = args.jobs / slots
    print(f"\n{args.jobs} jobs x {job_s:.2f} s of 1-thread CPU work ({iterations} iterations, "
          f"{args.epochs} reports + 1 final with checkpoint), {slots} slots, ideal = T_seq / {slots} = {ideal:.1f} s; "
          f"Ray part {total:.0f} s; load average {', '.join(f'{k} {v}' for k, v in loads.items())}")
    print("\n| variant | makespan s | vs ideal | vs sequential |\n|---|---:|---:|---:|")
    rows = {"(1) sequential loop in the driver": t_seq, f"(2) bare Ray tasks, {slots} slots": results["bare"],
            f"(3) Tune + TorchTrainer (orchestrator path), {slots} at a time": results["train"]}
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} | {value / ideal:.2f}x | {value / t_seq:.2f}x |")

    over_bare = (results["bare"] - ideal) / rounds
    over_train = (results["train"] - ideal) / rounds
    print("\n| per-job overhead | s |\n|---|---:|")
    print(f"| trivial bare task (median of {args.trivial}; first {bare_trivial[0]:.3f}) | {med(bare_trivial):.3f} |")
    print(f"| trivial TorchTrainer.fit() from the driver (median of {args.trivial}) | {med(fit_trivial):.1f} |")
    print(f"| trivial job through Tune + TorchTrainer, one at a time (Tuner wall / {args.trivial}) | "
          f"{tune_trivial:.1f} |")
    print(f"| inside (2): (makespan - ideal) / (jobs / slots) | {over_bare:.1f} |")
    print(f"| inside (3): (makespan - ideal) / (jobs / slots) | {over_train:.1f} |")

    # ---- where a Train job's time goes, from the timestamps of (3).
    def phase(rows_, f) -> float:
        return med([f(t) for t in rows_ if {"trial_start", "fn_start"} <= t.keys()])

    busy = sum(t["fit_end"] - t["trial_start"] for t in timings if "fit_end" in t)
    idle = (results["train"] * slots - busy) / args.jobs
    print("\n| where a job's slot time goes in (3) (median per job) | s |\n|---|---:|")
    parts = {
        "trial actor process created -> trainable entered": lambda t: t["trial_start"] - t["trial_proc"],
        "trainable entered -> fit() called (build TorchTrainer)": lambda t: t["fit_start"] - t["trial_start"],
        "fit() called -> Train worker process created (controller, placement group)":
            lambda t: t["worker_proc"] - t["fit_start"],
        "worker process created -> train fn entered (imports, torch backend)":
            lambda t: t["fn_start"] - t["worker_proc"],
        "train fn: the work": lambda t: t["work"],
        "train fn: ray.train.report calls (3 + final checkpoint)": lambda t: t["report"],
        "train fn returned -> fit() returns (controller poll, worker group shutdown)":
            lambda t: t["fit_end"] - t["fn_end"],
    }
    for name, f in parts.items():
        print(f"| {name} | {phase(timings, f):.2f} |")
    print(f"| slot idle between trials, mean (Tune: trial actor start, scheduling, Tuner start/end) | {idle:.2f} |")
    print(f"| total slot time per job = makespan x slots / jobs | {results['train'] * slots / args.jobs:.2f} |")
    print(f"| (the same work alone in the driver / in a bare task) | {job_s:.2f} / {bare_job:.2f} |")
    if trivial_timings and all("fn_start" in t for t in trivial_timings):
        wp = med([t["fn_start"] - t["fit_start"] for t in trivial_timings])
        wp_proc = med([t["worker_proc"] - t["fit_start"] for t in trivial_timings])
        end = med([t["fit_end"] - t["fn_end"] for t in trivial_timings])
        print(f"\ntrivial job, one at a time: fit() -> worker process exists {wp_proc:.2f} s, "
              f"-> train fn entered {wp:.2f} s; train fn returned -> fit() returns {end:.2f} s")

    allowed = 1.15 * ideal + rounds * tune_trivial
    ok = results["train"] <= allowed
    print(f"\nmakespan (3) {results['train']:.1f} s <= 1.15 x ideal {1.15 * ideal:.1f} s + "
          f"jobs/slots {rounds:g} x trivial per-job overhead {tune_trivial:.1f} s = {allowed:.1f} s: "
          f"{'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
