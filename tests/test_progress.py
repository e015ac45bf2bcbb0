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
    assert "ETA not known yet" in board.summary() and "ETA once a job has timed two epochs" in board.notes()
    # Started 100 s ago (imports, loading), first epoch reported at -40 s, fifth at -0 s: 10 s/epoch.
    board.status["m-fold0-x"] = JobStatus("running", epoch=5, epochs=10, started=now - 100,
                                          first_report=(1, now - 40), last_report=now)
    assert board.status["m-fold0-x"].epoch_seconds() == 10
    # No job has finished yet: one epoch stands in for the tail after the last epoch.
    assert abs(board.remaining("m-fold0-x", now) - (5 * 10 + 10)) < 1e-6
    # A job of the model: start-up as measured (100 - 40 + 10 s for epoch 1) + 9 more epochs + the tail.
    per_job = (now - 40) - (now - 100) + 10 * (10 - 1) + 10
    assert abs(board.job_seconds("m") - per_job) < 1e-6
    # fold1 has run 70 s of its per_job; each queued job goes to the slot that frees first.
    left = board.forecast(now)
    assert abs(left["m-fold1-x"] - (per_job - 70)) < 1e-6
    assert abs(left["m-fold2-x"] - (60 + per_job)) < 1e-6  # after fold0, on its slot
    assert abs(left["m-fold3-x"] - (per_job - 70 + per_job)) < 1e-6  # after fold1
    assert abs(board.eta() - (per_job - 70 + per_job)) < 0.1
    assert board.summary().startswith("0 done, 2 running, 2 queued, 0 failed")


def test_a_running_job_counts_down_with_the_measured_tail():
    board = Board(plans(2), slots=1)
    now = time.time()
    # fold0 finished: its last epoch report 12 s before it was done (test inference, upload).
    board.status["m-fold0-x"] = JobStatus("done", epoch=10, epochs=10, started=now - 500, last_report=now - 212,
                                          finished=now - 200)
    assert board.tail_seconds() == 12
    board.status["m-fold1-x"] = JobStatus("running", epoch=4, epochs=10, started=now - 60,
                                          first_report=(2, now - 40), last_report=now - 20)
    assert board.remaining("m-fold1-x", now - 20) == 10 * 6 + 12  # at its report
    assert board.remaining("m-fold1-x", now) == 10 * 6 + 12 - 20  # 20 s later, without a new report
    assert board.remaining("m-fold1-x", now + 1000) == 0


def test_queued_jobs_wait_for_the_slot_that_frees_first():
    """Three 100 s jobs on two slots take 200 s, not 150: the last one runs alone."""
    board = Board(plans(4), slots=2)
    board.status["m-fold0-x"] = JobStatus("done", started=0.0, finished=100.0)
    left = board.forecast()
    assert [round(left[f"m-fold{k}-x"]) for k in (1, 2, 3)] == [100, 100, 200]
    assert round(board.eta()) == 200


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
    earlier = Board(plans(2, estimate=120.0))
    assert earlier.eta() is None and "ETA once a slot has started" in earlier.notes()  # its start-up: unknown
    earlier.status["m-fold0-x"] = JobStatus("running", epochs=10, started=time.time())
    assert abs(earlier.eta() - 240) < 1  # then the plan's estimate (from earlier runs) for each


def test_a_log_gets_one_line_per_event(capsys):
    board = Board(plans(2), slots=2)
    table = ProgressTable(board, live=False)
    table.phase("starting Ray: an embedded one")
    table.handle({"job_id": "m-fold0-x", "kind": "started", "node": "127.0.0.1"})
    for epoch in (1, 2, 3):
        table.handle({"job_id": "m-fold0-x", "kind": "epoch", "epoch": epoch, "epochs": 10, "node": "127.0.0.1",
                      "val_macro_f1": 0.1 * epoch, "best_f1": 0.1 * epoch})
    board.status["m-fold0-x"] = JobStatus("done", val_f1=0.35, started=1.0, finished=2.0)
    table.handle({"job_id": "m-fold0-x", "kind": "final"})
    board.update("m-fold1-x", state="failed", error="ValueError: x")  # as the collector records it
    table.handle({"job_id": "m-fold1-x", "kind": "failed", "error": "Traceback ...\nValueError: x"})
    table.handle({"job_id": "m-fold1-x", "kind": "cancelled"})  # not an event a user needs
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 7  # the phase, started, 3 epochs, done, failed: no table snapshots
    assert "starting Ray: an embedded one [0 done, 0 running, 2 queued, 0 failed" in lines[0]
    lines = lines[1:]
    assert "started m-fold0-x" in lines[0] and "epoch 3/10 m-fold0-x: val F1 0.3000 (best 0.3000)" in lines[3]
    assert "min left" in lines[3] and "min left" not in lines[1]  # an ETA once two epochs are measured
    assert "done m-fold0-x: OOF macro F1 0.3500" in lines[4]
    assert "FAILED m-fold1-x: ValueError: x" in lines[5]
    assert all(line[:8].count(":") == 2 for line in lines)  # each with its time
    assert "\x1b" not in err and "\r" not in err  # no escape codes or redraws in a log


def test_a_terminal_keeps_failures_above_the_live_view():
    import io

    stream = io.StringIO()
    board = Board(plans(2), slots=2)
    table = ProgressTable(board, live=True, stream=stream)
    table.handle({"job_id": "m-fold0-x", "kind": "started"})
    board.update("m-fold1-x", state="failed", error="ValueError: x")
    table.handle({"job_id": "m-fold1-x", "kind": "failed"})
    table.handle({"job_id": "m-fold0-x", "kind": "error", "retry": True, "error": "Traceback\nOSError: disk"})
    table.show_final()
    out = stream.getvalue()
    assert "FAILED m-fold1-x: ValueError: x" in out and "retrying m-fold0-x: OSError: disk" in out
    assert "started m-fold0-x" not in out  # routine events only repaint the view
    assert out.rstrip().endswith(F1_NOTE[-30:]) and "1 running, 0 queued, 1 failed" in out  # the final view


DEMO_IDS = ["convnext_multi-fold0-5e07d682", "convnext_multi-fold1-0c4fabbd", "test_efficientnet-fold2-f01a5be5",
            "test_efficientnet-fold1-996c859d"]


def demo_board(per: float = 7.5, node: str = "127.0.0.1") -> Board:
    """The demo's job ids: one done, one running, one starting, one queued, one cached."""
    ids = [*DEMO_IDS, "test_convnext-fold0-88e3de07"]
    board = Board({i: JobPlan(i, i.split("-")[0], "b", TrainSpec(epochs=8), 0, "h", Path("/tmp"), "to run", 1.0, None)
                   for i in ids}, slots=2)
    now = time.time()
    for i in ids:
        board.status[i] = JobStatus(epochs=8)
    board.status[ids[0]] = JobStatus("done", node=node, epoch=8, epochs=8, val_f1=0.25, started=now - 90,
                                      first_report=(1, now - 80), last_report=now - 80 + 7 * per, finished=now - 5)
    board.status[ids[1]] = JobStatus("running", node=node, epoch=3, epochs=8, val_f1=0.2, started=now - 40,
                                      first_report=(1, now - 2 * per), last_report=now)
    board.status[ids[2]] = JobStatus("running", node=node, epochs=8, started=now - 3)
    board.status[ids[4]] = JobStatus("cached", epoch=8, epochs=8, val_f1=0.3)
    return board


def render(board: Board, width: int, height: int = 50) -> list[str]:
    from rich.console import Console

    from orchestrator.cluster.progress_view import BoardView

    console = Console(width=width, height=height, record=True)
    console.print(BoardView(board))
    return console.export_text().rstrip("\n").splitlines()


def test_the_live_view_fits_80_and_160_columns_and_says_which_f1_it_shows():
    for width in (80, 160):
        lines = render(demo_board(), width)
        assert all(len(line) <= width for line in lines)
        assert lines[0].startswith("1 done, 2 running, 1 queued, 0 failed | elapsed")  # the summary, one line
        assert "1 of 5 jobs cached (finished in an earlier run)" in lines[1]
        header = next(line for line in lines if line.startswith("job"))
        rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in DEMO_IDS}
        assert sorted(rows) == sorted(DEMO_IDS)  # every job id whole, none cut short
        assert ("s/epoch" in header) == (width == 160)  # the first to give way on a narrow terminal
        assert "node" in header and "ETA" in header and "val F1" in header
        # The note on val F1 last, wrapped at the terminal's width (not the table's): two lines at 80.
        assert " ".join(line.strip() for line in lines[-2:]).endswith(F1_NOTE) and (F1_NOTE == lines[-1]) == (width == 160)


def test_no_cell_is_blank_without_saying_why():
    lines = render(demo_board(), 160)
    cells = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in DEMO_IDS}
    # node state epoch F1 s/epoch ETA: all there (an ETA as "x.x min")
    assert all(len(row) == (7 if row[-1] == "min" else 6) for row in cells.values())
    assert cells["test_efficientnet-fold2-f01a5be5"][1:3] == ["starting", "0/8"]
    assert cells["test_efficientnet-fold1-996c859d"][:4] == ["-", "queued", "0/8", "-"]
    assert cells["convnext_multi-fold1-0c4fabbd"][1] == "running" and cells["convnext_multi-fold1-0c4fabbd"][6] == "min"
    assert "test_convnext-fold0-88e3de07" in " ".join(lines) and "cached" in " ".join(lines)
    fresh = Board(plans(1))
    fresh.status["m-fold0-x"] = JobStatus("running", epochs=10, started=time.time())
    row = next(line for line in render(fresh, 160) if line.startswith("m-fold0-x")).split()
    assert row[2:] == ["starting", "0/10", "-", "-", "measuring"]  # nothing timed yet: its ETA is being measured


def test_columns_stay_put_when_numbers_grow():
    slow = demo_board(per=123.4, node="10.0.0.12")  # wider s/epoch and ETA values, another node address
    for width in (80, 160):
        fast_header = next(line for line in render(demo_board(), width) if line.startswith("job"))
        slow_header = next(line for line in render(slow, width) if line.startswith("job"))
        assert fast_header == slow_header


def test_a_short_terminal_keeps_the_running_rows():
    board = demo_board()
    for k in range(10):  # ten more cached jobs: 15 rows
        job_id = f"old-fold{k}-x"
        board.plans[job_id] = JobPlan(job_id, "old", "b", TrainSpec(epochs=8), k, "h", Path("/tmp"), "cached", 1.0, None)
        board.status[job_id] = JobStatus("cached", epoch=8, epochs=8, val_f1=0.3)
    lines = render(board, 80, height=16)
    assert len(lines) <= 16
    text = "\n".join(lines)
    assert all(job_id in text for job_id in DEMO_IDS)  # running, starting, queued and done rows stay
    assert "old-fold9-x" not in text and "and 6 more (6 cached) not shown: a taller terminal shows them" in text
    assert lines[0].startswith("1 done, 2 running, 1 queued") and F1_NOTE[-20:] in lines[-1]


def test_after_ctrl_c_the_view_says_how_each_job_was_left():
    board = demo_board()
    board.update("convnext_multi-fold1-0c4fabbd", state="interrupted")
    board.update("test_efficientnet-fold2-f01a5be5", state="interrupted")
    board.update("test_efficientnet-fold1-996c859d", state="not started")
    lines = render(board, 160)
    assert lines[0].startswith("1 done, 2 interrupted, 1 not started, 0 failed | elapsed")
    assert lines[0].endswith("| stopped by Ctrl-C")
    row = next(line for line in lines if line.startswith("test_efficientnet-fold1-996c859d")).split()
    assert row[1:4] == ["-", "not", "started"] and row[-1] == "-"  # no ETA for a job that will not run


def test_the_phase_comes_first_then_the_slots_starting():
    board = Board(plans(3), slots=2)
    table = ProgressTable(board, live=False)
    table.phase("starting Ray: an embedded one")
    assert board.notes().startswith("starting Ray") and "ETA" not in board.notes()
    table.phase("", slots=2)
    assert board.notes().startswith("starting 2 slots (0 with a job)")
    table.handle({"job_id": "m-fold0-x", "kind": "started"})
    assert board.notes().startswith("starting 2 slots (1 with a job)")
    table.handle({"job_id": "m-fold1-x", "kind": "started"})
    assert board.starting == 0 and board.notes() == "ETA once a job has timed two epochs"


def test_the_display_survives_pickling():
    import pickle

    table = ProgressTable(Board(plans(1)), live=True)
    table._live = object()  # stands for a running rich.Live
    again = pickle.loads(pickle.dumps(table))
    assert again._live is None and list(again.board.plans) == ["m-fold0-x"]


def test_ray_log_lines_go_above_the_live_view_not_through_it():
    import io
    import logging

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    handler = logging.StreamHandler(screen)  # as Ray's own handler holds the real stderr
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(handler)
    try:
        table = ProgressTable(Board(plans(1)), stream=screen)
        assert table.live_view
        table.phase("starting Ray: an embedded one")
        assert handler.stream is not screen  # through rich while the view is up
        ray_logger.warning("a worker died (a real Ray warning)")
        table.show_final()
        assert handler.stream is screen  # and back afterwards
    finally:
        ray_logger.removeHandler(handler)
    assert "a worker died (a real Ray warning)" in screen.getvalue()  # shown, not hidden


def test_relative_cost_ranks_backbones_as_they_run():
    """FLOPs on the meta device: test_efficientnet runs slower than test_convnext (and a ResNet-18
    far slower), which parameters x pixels had the wrong way round."""
    from orchestrator.cluster.plan import relative_cost
    from tasks.spec.experiment import ModelSpec, TrainSpec

    train = TrainSpec(input_size=(64, 48), epochs=4)
    cost = {b: relative_cost(ModelSpec(backbone=b), train) for b in ("test_convnext", "test_efficientnet", "resnet18")}
    assert cost["test_convnext"] < cost["test_efficientnet"] < cost["resnet18"]
    longer = train.model_copy(update={"epochs": 8})
    assert relative_cost(ModelSpec(backbone="test_convnext"), longer) == 2 * cost["test_convnext"]
