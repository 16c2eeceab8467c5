"""The worker's batching decision on its own: when a batch closes and what it takes."""

from __future__ import annotations

from zeroserve.worker.job import Job
from zeroserve.worker.loops.batcher import Batcher


def job(rid: str, arrived: float, deadline: float = 100.0) -> Job:
    return Job(b"c", rid.encode(), {}, b"", deadline, arrived, 1)


def rids(jobs: list[Job]) -> list[str]:
    return [j.rid.decode() for j in jobs]


def test_nothing_waits_nothing_is_due() -> None:
    batcher = Batcher(4, 0.01)
    assert batcher.wait_ms(0.0) is None and batcher.due_at() is None
    assert batcher.take(0.0) == ([], [])


def test_a_batch_closes_batch_timeout_after_its_first_request() -> None:
    batcher = Batcher(4, 0.5)
    batcher.add(job("a", arrived=1.0))
    batcher.add(job("b", arrived=1.25))
    assert batcher.wait_ms(1.25) == 250
    assert batcher.take(1.25) == ([], []), "not due yet"
    batch, ended = batcher.take(1.5)
    assert (rids(batch), ended, len(batcher)) == (["a", "b"], [], 0)


def test_a_full_batch_closes_at_once_and_takes_the_oldest() -> None:
    batcher = Batcher(2, 10.0)
    for i, rid in enumerate("abc"):
        batcher.add(job(rid, arrived=float(i)))
    assert batcher.full() and batcher.wait_ms(2.0) == 0
    batch, _ = batcher.take(2.0)
    assert rids(batch) == ["a", "b"] and len(batcher) == 1
    assert batcher.due_at() == 12.0, "the next batch is timed from its own first request"


def test_cancelled_and_expired_requests_are_handed_back_not_batched() -> None:
    batcher = Batcher(2, 0.0)
    gone, late, fine, next_one = (
        job("gone", 0),
        job("late", 0, deadline=0.5),
        job("ok", 0),
        job("n", 0),
    )
    gone.cancelled = True
    for j in (gone, late, fine, next_one):
        batcher.add(j)
    batch, ended = batcher.take(1.0)
    # Skipped requests do not take a place: the batch is still filled up to its size.
    assert rids(batch) == ["ok", "n"] and rids(ended) == ["gone", "late"]


def test_a_timer_may_take_a_batch_before_it_is_due() -> None:
    batcher = Batcher(4, 10.0)
    batcher.add(job("a", arrived=0.0))
    assert batcher.take(0.0) == ([], [])
    assert rids(batcher.take(0.0, due_only=False)[0]) == ["a"]


def test_a_removed_request_is_not_batched() -> None:
    batcher = Batcher(4, 0.0)
    a, b = job("a", 0), job("b", 0)
    batcher.add(a)
    batcher.add(b)
    assert batcher.remove(a) and not batcher.remove(a)
    assert rids(batcher.take(1.0)[0]) == ["b"]
