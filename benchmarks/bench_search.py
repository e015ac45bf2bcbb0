"""What ASHA saves in a search, and the search's makespan against the ideal for its slots.

    python -m benchmarks.bench_search [--trials 8] [--epochs 6] [--persons 60]

The same search is run twice, side by side in one process: experiments/search_demo.yaml with
the random searcher (a fixed seed, so both runs train exactly the same sampled trials) and
`--trials` trials of up to `--epochs` epochs on a synthetic dataset written for the run,
(1) with ASHA (search_demo's grace and reduction factor) and (2) with FIFO (every trial runs
to its end). Both go through the shipped path (`orchestrator.cluster.tuning.run_search`: Tune,
the trial trainable, one TorchTrainer per job).

Reported per run: trial-epochs trained, of the trials x epochs a FIFO run trains; the best
trial's validation macro F1 (ASHA should find the same best); the makespan against the ideal
for its slots = the sum of the trials' own times (start to last report) / concurrent trials.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_variant(root: Path, results: Path, scheduler: str, trials: int, epochs: int) -> dict:
    import io

    from orchestrator.cluster.tuning import run_search
    from tasks.spec.load import load_spec

    spec = load_spec(REPO / "experiments" / "search_demo.yaml",
                     [f"data.root={root}", f"results_dir={results}", f"name=bench_{scheduler}",
                      "search.searcher=random", f"search.num_samples={trials}", f"search.scheduler={scheduler}",
                      f"train.epochs={epochs}", "train.patience=100"])
    started = time.monotonic()
    outcome = run_search(spec, stream=io.StringIO())
    makespan = time.monotonic() - started
    table = outcome.trials
    slots = 2  # search_demo: 1 CPU per fake_gpu slot, one job per trial, on a 2-core machine
    ideal = table["seconds"].sum() / slots
    best = table.loc[table["val_macro_f1"].idxmax()]
    return {"variant": scheduler, "trials": len(table), "trial_epochs": int(table["epochs"].sum()),
            "of_fifo": trials * epochs, "stopped": int((table["status"] == "stopped early").sum()),
            "best_f1": float(best["val_macro_f1"]), "best_lr": float(best["train.optimizer.lr"]),
            "makespan_s": makespan, "ideal_s": ideal, "sum_trial_s": float(table["seconds"].sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--persons", type=int, default=60)
    args = parser.parse_args(argv)
    from tasks.synth.write import write_synth

    work = Path(tempfile.mkdtemp(prefix="bench_search-"))
    try:
        root = work / "data"
        write_synth(root, persons=args.persons, seed=0, size=(48, 64))
        rows = [run_variant(root, work / "results", s, args.trials, args.epochs) for s in ("asha", "fifo")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.trials} trials of up to {args.epochs} epochs, random searcher (same trials in both), 2 slots\n")
    print(f"{'variant':8s} {'trial-epochs':>13s} {'of FIFO':>8s} {'stopped':>8s} {'best val F1':>12s} "
          f"{'makespan':>9s} {'ideal':>7s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['variant']:8s} {r['trial_epochs']:>13d} {r['trial_epochs'] / r['of_fifo']:>8.2f} {r['stopped']:>8d} "
              f"{r['best_f1']:>12.4f} {r['makespan_s']:>8.1f}s {r['ideal_s']:>6.1f}s "
              f"{r['makespan_s'] / r['ideal_s']:>6.2f}")
    asha, fifo = rows
    print(f"\nASHA trained {1 - asha['trial_epochs'] / fifo['trial_epochs']:.0%} fewer trial-epochs, "
          f"makespan {asha['makespan_s'] / fifo['makespan_s']:.2f} x FIFO's; best lr ASHA {asha['best_lr']:.3g}, "
          f"FIFO {fifo['best_lr']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
