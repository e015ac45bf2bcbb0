"""The progress display: ETAs from measured epoch times (never start-up), one line per event in
a log, a live table on a terminal, and a board that says which F1 it shows."""
import time
from pathlib import Path
from types import SimpleNamespace

from orchestrator.cluster.plan import JobPlan
from orchestrator.cluster.progress import F1_NOTE, Board, JobStatus, ProgressTable
from tasks.spec.experiment import TrainSpec


def plans(n: int, model: str = "m", estimate: float | None = None) -> dict[str, JobPlan]:
    return {f"{model}-fold{k}-x": JobPlan(f"{model}-fold{k}-x", model, "resnet18", TrainSpec(epochs=10), k, "h",
                                          Path("/tmp"), "to run", 1.0, estimate) for k in range(n)}


def trial(job_id: str):
    return SimpleNamespace(config={"job": {"job_id": job_id}}, get_error=lambda: RuntimeError("boom\nValueError: x"))


def test_eta_counts_epochs_not_start_up():
    board = Board(plans(4), slots=2)
    now = time.time()
    board.status["m-fold1-x"] = JobStatus("running", epoch=1, epochs=10, started=now - 70,
                                          first_report=(1, now), last_report=now)
    assert board.eta() is None  # no epoch timed yet: no guess from start-up
    assert "ETA after the first epochs" in board.summary()
    # Started 100 s ago (imports, loading), first epoch reported at -40 s, fifth at -0 s: 10 s/epoch.
    board.status["m-fold0-x"] = JobStatus("running", epoch=5, epochs=10, started=now - 100,
                                          first_report=(1, now - 40), last_report=now)
    assert board.status["m-fold0-x"].epoch_seconds() == 10
    assert board.status["m-fold0-x"].remaining() == 50
    # A job of the model: start-up as measured (100 - 40 + 10 s for epoch 1) + 9 more epochs x 10 s.
    per_job = (now - 40) - (now - 100) + 10 * (10 - 1)
    assert abs(board.job_seconds("m") - per_job) < 1e-6
    # fold1 has run 70 s of its per_job; the two queued ones take per_job each; two slots.
    expected = (50 + (per_job - 70) + 2 * per_job) / 2
    assert abs(board.eta() - expected) < 0.01
    assert board.summary().startswith("0 done, 2 running, 2 queued, 0 failed")


def test_an_unmeasured_model_is_timed_by_relative_cost():
    both = {**plans(1, model="small"), **plans(1, model="big")}
    both["big-fold0-x"] = JobPlan("big-fold0-x", "big", "resnet50", TrainSpec(epochs=10), 0, "h", Path("/tmp"),
                                  "to run", 3.0, None)
    board = Board(both, slots=1)
    board.status["small-fold0-x"] = JobStatus("done", started=0.0, finished=100.0)
    assert board.job_seconds("big") == 300  # three times the cost of the measured model
    assert board.eta() == 300


def test_finished_jobs_time_the_queued_ones():
    board = Board(plans(3), slots=1)
    board.status["m-fold0-x"] = JobStatus("done", started=100.0, finished=400.0, epochs=10, epoch=10)
    assert board.job_seconds("m") == 300
    assert board.eta() == 600  # two queued jobs of 300 s on one slot
    assert Board(plans(2, estimate=120.0)).eta() == 240  # nothing measured: the plan's estimate


def test_a_log_gets_one_line_per_event(capsys):
    board = Board(plans(2), slots=2)
    table = ProgressTable(board, live=False)
    table.handle({"job_id": "m-fold0-x", "kind": "started", "node": "127.0.0.1"})
    for epoch in (1, 2, 3):
        table.handle({"job_id": "m-fold0-x", "kind": "epoch", "epoch": epoch, "epochs": 10, "node": "127.0.0.1",
                      "val_macro_f1": 0.1 * epoch, "best_f1": 0.1 * epoch})
    board.status["m-fold0-x"] = JobStatus("done", val_f1=0.35, started=1.0, finished=2.0)
    table.handle({"job_id": "m-fold0-x", "kind": "final"})
    board.update("m-fold1-x", state="failed", error="ValueError: x")  # as the collector records it
    table.handle({"job_id": "m-fold1-x", "kind": "failed", "error": "Traceback ...\nValueError: x"})
    table.handle({"job_id": "m-fold1-x", "kind": "cancelled"})  # not an event a user needs
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6  # started, 3 epochs, done, failed: no table snapshots
    assert "started m-fold0-x" in lines[0] and "epoch 3/10 m-fold0-x: val F1 0.3000 (best 0.3000)" in lines[3]
    assert "min left" in lines[3] and "min left" not in lines[1]  # an ETA once two epochs are measured
    assert "done m-fold0-x: OOF macro F1 0.3500" in lines[4]
    assert "FAILED m-fold1-x: ValueError: x" in lines[5]
    assert all(line[:8].count(":") == 2 for line in lines)  # each with its time


def test_the_live_table_says_which_f1_it_shows():
    from rich.console import Console

    board = Board(plans(2))
    board.status["m-fold0-x"] = JobStatus("running", node="127.0.0.1", epoch=2, epochs=10, val_f1=0.25)
    console = Console(width=200, record=True)
    console.print(board.table())
    text = console.export_text()
    assert "val F1" in text and F1_NOTE[:40] in text.replace("\n", " ")
    assert "0 done, 1 running, 1 queued, 0 failed" in text and "0.2500" in text and "2/10" in text


def test_the_display_survives_pickling():
    import pickle

    table = ProgressTable(Board(plans(1)), live=True)
    table._live = object()  # stands for a running rich.Live
    again = pickle.loads(pickle.dumps(table))
    assert again._live is None and list(again.board.plans) == ["m-fold0-x"]
