"""The slots' queue as a plain object: who trains what, attempts, lost slots, cancelling."""
import time

from orchestrator.cluster.slots.queue import JobQueue
from orchestrator.cluster.slots.store import JobStore


def jobs(*ids: str, channel: str = "run") -> list[dict]:
    return [{"job_id": j, "channel": channel} for j in ids]


def taken(got: dict) -> str | None:
    return got["job"]["job_id"] if "job" in got else None


def test_jobs_go_out_in_order_and_every_rank_of_a_slot_gets_the_same():
    q = JobQueue(max_failures=1)
    q.submit(jobs("a", "b", "c"))
    assert taken(q.take("s0", None, "g1")) == "a"  # rank 1 asks first
    assert taken(q.take("s0", None, "g1")) == "a"  # rank 0 of the same worker group: no restart
    assert taken(q.take("s1", None, "g2")) == "b"
    assert q.states() == {"a": "running", "b": "running", "c": "queued"}
    # rank 1 asks for the next job before rank 0 reported the end of "a": both get "c"
    assert taken(q.take("s0", "a", "g1")) == "c"
    q.event("a", "final", {"checkpoint_path": "x"})
    assert taken(q.take("s0", "a", "g1")) == "c"
    assert q.attempts == {"a": 1, "b": 1, "c": 1}
    assert [e["kind"] for e in q.drain("run")] == ["final"] and q.drain("run") == []


def test_one_poll_gives_the_states_and_the_event_that_closed_a_job():
    q = JobQueue(max_failures=0)
    q.submit(jobs("a", "b") + jobs("t", channel="trial"))
    taken(q.take("s0", None, "g1"))
    q.event("a", "epoch", {"epoch": 1})
    q.event("a", "final", {"checkpoint_path": "x"})
    polled = q.poll("run")
    assert polled["states"] == {"a": "done", "b": "queued", "t": "queued"}
    assert [e["kind"] for e in polled["events"]] == ["epoch", "final"]
    assert q.poll("run")["events"] == [] and q.drain("trial") == []


def test_a_restarted_slot_resumes_its_job_until_its_attempts_run_out():
    q = JobQueue(max_failures=1)
    q.submit(jobs("a", "b"))
    q.finish_submitting()
    assert taken(q.take("s0", None, "g1")) == "a"
    assert taken(q.take("s0", None, "g2")) == "a"  # Train restarted the worker group: the same job
    assert taken(q.take("s0", None, "g2")) == "a"  # its second rank: the same attempt
    assert q.attempts["a"] == 2
    assert taken(q.take("s0", None, "g3")) == "b"  # a third start: "a" failed for good
    kinds = [(e["job_id"], e["kind"]) for e in q.drain("run")]
    assert kinds == [("a", "retry"), ("a", "failed")]
    q.event("b", "final", {})
    assert q.take("s0", "b", "g3") == {"done": True}


def test_a_job_that_raised_is_tried_again_first_then_failed():
    q = JobQueue(max_failures=1)
    q.submit(jobs("a", "b"))
    assert taken(q.take("s0", None, "s0")) == "a"
    q.event("a", "failed", {"error": "boom"})
    assert taken(q.take("s0", "a", "s0")) == "a"  # again, before "b", from its last epoch
    q.event("a", "failed", {"error": "boom"})
    assert taken(q.take("s0", "a", "s0")) == "b"
    assert q.states()["a"] == "failed"
    assert [e["kind"] for e in q.drain("run")] == ["error", "failed"]


def test_a_silent_slot_loses_its_job_to_another_slot():
    q = JobQueue(max_failures=2, lost_after=0.2)
    q.submit(jobs("a"))
    q.finish_submitting()
    assert taken(q.take("s0", None, "s0")) == "a"
    assert q.take("s1", None, "s1") == {"done": True}  # nothing unassigned: an idle slot may end
    time.sleep(0.3)  # s0's node is gone: no heartbeat
    assert taken(q.take("s1", None, "s1")) == "a"
    assert q.beat("s0", "a") is False  # s0, if it was only slow, learns the job is not its own
    assert q.beat("s1", "a") is True
    assert [e["kind"] for e in q.drain("run")] == ["requeued"]


def test_cancelling_a_channel_drops_queued_jobs_and_recalls_running_ones():
    q = JobQueue(max_failures=0)
    q.submit(jobs("t1-a", "t1-b", channel="t1") + jobs("t2-a", channel="t2"))
    assert taken(q.take("s0", None, "s0")) == "t1-a"
    assert q.cancel("t1") == 2
    assert q.beat("s0", "t1-a") is False  # the running one stops at its epoch's end
    assert taken(q.take("s1", None, "s1")) == "t2-a"  # the queued one is gone
    q.event("t1-a", "cancelled", {})
    assert q.states() == {"t1-a": "cancelled", "t1-b": "cancelled", "t2-a": "running"}
    assert {e["job_id"] for e in q.drain("t1")} == {"t1-a", "t1-b"} and q.drain("t2") == []


def test_stop_hands_out_nothing_more():
    q = JobQueue(max_failures=0)
    q.submit(jobs("a", "b"))
    q.stop()
    assert q.take("s0", None, "s0") == {"done": True}


def test_a_job_store_keeps_only_its_newest_epoch_and_finishes_last(tmp_path):
    work = tmp_path / "work"
    (work / "tb").mkdir(parents=True)
    (work / "tb" / "events").write_text("e1")
    (work / "checkpoint.pt").write_text("epoch 1")
    store = JobStore(str(tmp_path / "storage"), "demo", "m-fold0-x")
    store.save(work, ["checkpoint.pt", "tb", "absent"], epoch=1)
    (work / "checkpoint.pt").write_text("epoch 2")
    store.save(work, ["checkpoint.pt", "tb"], epoch=2)
    root = tmp_path / "storage" / "maskfold-jobs" / "demo" / "m-fold0-x"
    assert sorted(p.name for p in root.iterdir()) == ["epoch-0002", "latest.json"]
    back = tmp_path / "back"
    back.mkdir()
    assert store.restore(back) == 2 and (back / "checkpoint.pt").read_text() == "epoch 2"
    assert (back / "tb" / "events").read_text() == "e1" and store.final_path() is None
    path = store.save(work, ["checkpoint.pt"], epoch=2, final=True)
    assert store.final_path() == path == str(root / "final") and store.restore(tmp_path) == 0
