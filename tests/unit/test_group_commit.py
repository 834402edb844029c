"""GroupCommit: alone when idle, together when threads coincide, each caller its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from taskstore.errors import StoreUnavailable
from taskstore.group_commit import GroupCommit

WAIT_S = 10.0


class Recorder:
    """``write_one``/``write_many`` that double their input, record calls, and can hold the first write."""

    def __init__(self, *, fail_many: BaseException | None = None, bad: int | None = None) -> None:
        self.one: list[int] = []
        self.many: list[list[int]] = []
        self.fail_many = fail_many
        self.bad = bad
        self.gate = threading.Event()
        self.gate.set()
        self.in_write = threading.Event()

    def write_one(self, item: int) -> int:
        self.in_write.set()
        assert self.gate.wait(WAIT_S)
        self.one.append(item)
        if item == self.bad:
            raise ValueError(f"bad item {item}")
        return item * 2

    def write_many(self, items: Sequence[int]) -> list[int]:
        self.many.append(list(items))
        if self.fail_many is not None:
            raise self.fail_many
        if self.bad in items:
            raise ValueError("a bad item in the batch")
        return [item * 2 for item in items]


def submit_while_held(
    recorder: Recorder, commit: GroupCommit[int, int], items: list[int]
) -> dict[int, object]:
    """Hold the first write (item 0) in flight, submit ``items`` from threads meanwhile, then release."""
    outcomes: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            outcomes[item] = commit.submit(item)
        except Exception as exc:  # recorded for the assertions
            outcomes[item] = exc

    recorder.gate.clear()
    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert recorder.in_write.wait(WAIT_S)
    others = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in others:
        thread.start()
    _wait_until(lambda: len(commit._waiting) == len(items))
    recorder.gate.set()
    for thread in [first, *others]:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    return outcomes


def _wait_until(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(1000):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not met in 10 s")


def test_an_item_alone_is_written_by_itself() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write_one, recorder.write_many, max_in_flight=1)

    assert commit.submit(21) == 42
    assert commit.submit(5) == 10

    assert recorder.one == [21, 5] and recorder.many == []


def test_items_arriving_during_a_write_share_the_next_one() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write_one, recorder.write_many, max_in_flight=1)

    outcomes = submit_while_held(recorder, commit, [1, 2, 3, 4, 5])

    assert outcomes == {item: item * 2 for item in range(6)}
    assert recorder.one == [0]
    assert [sorted(batch) for batch in recorder.many] == [[1, 2, 3, 4, 5]]


def test_batches_are_capped() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write_one, recorder.write_many, max_batch=2, max_in_flight=1)

    outcomes = submit_while_held(recorder, commit, [1, 2, 3, 4, 5])

    assert outcomes == {item: item * 2 for item in range(6)}
    assert recorder.many and all(len(batch) <= 2 for batch in recorder.many)
    written = [*recorder.one[1:], *(item for batch in recorder.many for item in batch)]
    assert sorted(written) == [1, 2, 3, 4, 5]


def test_a_bad_item_fails_alone() -> None:
    recorder = Recorder(bad=3)
    commit = GroupCommit(recorder.write_one, recorder.write_many, max_in_flight=1)

    outcomes = submit_while_held(recorder, commit, [1, 2, 3, 4])

    assert isinstance(outcomes.pop(3), ValueError)
    assert outcomes == {0: 0, 1: 2, 2: 4, 4: 8}
    assert sorted(recorder.one[1:]) == [1, 2, 3, 4]


def test_an_unreachable_database_fails_the_whole_batch_without_retrying_each() -> None:
    recorder = Recorder(fail_many=StoreUnavailable("Postgres unavailable: connection refused"))
    commit = GroupCommit(recorder.write_one, recorder.write_many, max_in_flight=1)

    outcomes = submit_while_held(recorder, commit, [1, 2, 3])

    assert outcomes[0] == 0
    for item in (1, 2, 3):
        error = outcomes[item]
        assert isinstance(error, StoreUnavailable) and "connection refused" in str(error)
    assert recorder.one == [0]


def test_a_single_writes_error_reaches_its_caller() -> None:
    recorder = Recorder(bad=7)
    commit = GroupCommit(recorder.write_one, recorder.write_many, max_in_flight=1)

    with pytest.raises(ValueError, match="bad item 7"):
        commit.submit(7)
    assert commit.submit(8) == 16


def test_many_threads_each_get_their_own_result() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write_one, recorder.write_many, max_batch=8)
    results: dict[int, int] = {}
    lock = threading.Lock()

    def worker(start: int) -> None:
        for item in range(start, start + 200):
            value = commit.submit(item)
            with lock:
                results[item] = value

    threads = [threading.Thread(target=worker, args=(index * 1000,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 3)
        assert not thread.is_alive()

    assert len(results) == 16 * 200
    assert all(value == item * 2 for item, value in results.items())
    assert commit._in_flight == 0 and not commit._waiting


def test_writes_run_side_by_side_up_to_the_in_flight_limit() -> None:
    """With two writes allowed in flight, a second item is written at once; a third waits and is batched."""
    inside = threading.Semaphore(0)
    gates = {item: threading.Event() for item in range(4)}
    many: list[list[int]] = []

    def write_one(item: int) -> int:
        inside.release()
        assert gates[item].wait(WAIT_S)
        return item

    def write_many(items: Sequence[int]) -> list[int]:
        many.append(list(items))
        return list(items)

    commit = GroupCommit(write_one, write_many, max_in_flight=2)
    results: dict[int, int] = {}

    def call(item: int) -> None:
        results[item] = commit.submit(item)

    threads = [threading.Thread(target=call, args=(item,)) for item in range(4)]
    threads[0].start()
    threads[1].start()
    assert inside.acquire(timeout=WAIT_S) and inside.acquire(timeout=WAIT_S)  # both writing at once
    threads[2].start()
    threads[3].start()
    _wait_until(lambda: len(commit._waiting) == 2)
    gates[0].set()  # the first write ends: its leader hands over to the waiters, written together
    threads[2].join(WAIT_S)
    threads[3].join(WAIT_S)
    gates[1].set()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()

    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    assert [sorted(batch) for batch in many] == [[2, 3]]


def test_a_waiter_behind_a_hung_write_gives_up_after_its_timeout() -> None:
    """A leader whose statement hangs does not freeze the threads queued behind it."""
    recorder = Recorder()
    commit = GroupCommit(recorder.write_one, recorder.write_many, wait_timeout_s=0.2)
    recorder.gate.clear()
    leader = threading.Thread(target=commit.submit, args=(0,))
    leader.start()
    assert recorder.in_write.wait(WAIT_S)

    with pytest.raises(StoreUnavailable, match=r"no result within 0\.2 s"):
        commit.submit(1)

    assert not commit._waiting
    recorder.gate.set()
    leader.join(WAIT_S)
    assert not leader.is_alive()
    assert commit.submit(2) == 4 and commit._in_flight == 0
    assert 1 not in recorder.one and not recorder.many


def test_a_waiter_whose_batch_hangs_gives_up_and_the_batch_still_finishes() -> None:
    many_gate = threading.Event()
    in_many = threading.Event()

    def write_many(items: Sequence[int]) -> list[int]:
        in_many.set()
        assert many_gate.wait(WAIT_S)
        return [item * 2 for item in items]

    recorder = Recorder()
    commit = GroupCommit(recorder.write_one, write_many, wait_timeout_s=0.5)
    outcomes: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            outcomes[item] = commit.submit(item)
        except Exception as exc:  # recorded for the assertions
            outcomes[item] = exc

    recorder.gate.clear()
    threads = [threading.Thread(target=call, args=(item,)) for item in range(3)]
    threads[0].start()
    assert recorder.in_write.wait(WAIT_S)
    threads[1].start()
    threads[2].start()
    _wait_until(lambda: len(commit._waiting) == 2)
    recorder.gate.set()  # item 1 leads the batch [1, 2], whose statement hangs
    threads[2].join(WAIT_S)
    assert not threads[2].is_alive()
    assert isinstance(outcomes[2], StoreUnavailable)
    many_gate.set()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    assert outcomes[0] == 0 and outcomes[1] == 2
    assert commit.submit(5) == 10 and commit._in_flight == 0 and not commit._waiting
