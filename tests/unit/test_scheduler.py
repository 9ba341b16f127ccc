"""The shared batch scheduler: batching across calls, fairness, isolation, cancellation, limits, fork safety."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cprs_integrations import CPRSEngine
from cprs_integrations.engine.scheduler import BatchScheduler, QueueFullError
from cprs_integrations.models.base import PromptLayout
from tests.unit.fakes import KeywordCritic

TOPICS = ["zebra", "river", "bakery", "museum", "harbour", "violin", "glacier", "lantern"]


def text_about(topic: str, i: int) -> str:
    return " ".join(f"Sentence {k} of note {i} mentions the {topic if k % 3 == 0 else 'weather'}." for k in range(30))


class SlowCritic(KeywordCritic):
    """The keyword critic with a fixed cost per forward pass (so that calls overlap) and an optional failure."""

    def __init__(self, *args, delay: float = 0.01, fail_on_query_id: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay, self.fail_on_query_id, self.rows_per_batch = delay, fail_on_query_id, []

    def score_windows(self, layout, windows):
        from cprs_integrations.models.base import layouts_for

        layouts = layouts_for(layout, len(windows))
        if self.fail_on_query_id is not None and any(self.fail_on_query_id in lay.head for lay in layouts):
            raise ValueError("this query breaks the critic")
        time.sleep(self.delay)
        self.rows_per_batch.append({lay.head for lay in layouts})
        return super().score_windows(layouts, windows)


def test_concurrent_calls_share_forward_passes_and_equal_their_solo_results(minilm_tokenizer):
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=16, delay=0.02)
    engine = CPRSEngine(critic, max_wait_ms=20)
    jobs = [(TOPICS[i % len(TOPICS)], text_about(TOPICS[i % len(TOPICS)], i)) for i in range(16)]
    solo = [engine.compress(q, [t], target_ratio=0.3)[0] for q, t in jobs]
    solo_batches = engine.stats()["batches"]
    critic.rows_per_batch.clear()
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda job: engine.compress(job[0], [job[1]], target_ratio=0.3)[0], jobs))
    assert [r.spans for r in together] == [r.spans for r in solo]
    stats = engine.stats()
    assert stats["requests"] == 32 and stats["windows"] % 2 == 0  # the same windows twice
    # Windows of different queries went through the same forward passes, in fewer batches than alone.
    assert any(len(heads) > 1 for heads in critic.rows_per_batch)
    assert stats["batches"] - solo_batches < solo_batches


@pytest.mark.parametrize("critic_dir", ["tiny_encoder_dir", "tiny_decoder_dir"])
def test_probabilities_equal_alone_and_batched_with_real_critics(request, critic_dir):
    path = request.getfixturevalue(critic_dir)
    engine = CPRSEngine.from_pretrained(
        path, device="cpu", dtype="float32", window_tokens=64, batch_size=64, max_wait_ms=500
    )
    queries = ["zebra", "Which river floods in spring?", "bakery", "the museum's oldest painting"]
    texts = [text_about(t, i) for i, t in enumerate(TOPICS[:4])]
    alone = [engine.score(q, [x])[0].probs for q, x in zip(queries, texts)]
    before = engine.stats()["batches"]
    with ThreadPoolExecutor(4) as pool:
        batched = list(pool.map(lambda a: engine.score(a[0], [a[1]])[0].probs, zip(queries, texts)))
    assert engine.stats()["batches"] - before < before  # they did share forward passes
    for a, b in zip(alone, batched):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_long_call_does_not_starve_small_ones(minilm_tokenizer):
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=4, delay=0.01)
    engine = CPRSEngine(critic, max_wait_ms=0)
    long_text = " ".join(text_about("glacier", i) for i in range(40))  # hundreds of windows
    finished: dict[str, float] = {}

    def run(name: str, query: str, text: str) -> None:
        engine.compress(query, [text], target_ratio=0.2)
        finished[name] = time.perf_counter()

    long_thread = threading.Thread(target=run, args=("long", "glacier", long_text))
    long_thread.start()
    time.sleep(0.05)  # the long call is queued and running
    small = [threading.Thread(target=run, args=(f"s{i}", "zebra", text_about("zebra", i))) for i in range(8)]
    for thread in small:
        thread.start()
    for thread in [*small, long_thread]:
        thread.join()
    assert all(finished[f"s{i}"] < finished["long"] for i in range(8))


def test_one_calls_failure_does_not_fail_the_others(minilm_tokenizer):
    bad_id = minilm_tokenizer.convert_tokens_to_ids("violin")
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=16, delay=0.02, fail_on_query_id=bad_id)
    engine = CPRSEngine(critic, max_wait_ms=30)

    def run(query: str):
        try:
            return engine.compress(query, [text_about(query, 1)], target_ratio=0.3)[0]
        except ValueError as error:
            return error

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, ["zebra", "violin", "river", "bakery"]))
    assert isinstance(results[1], ValueError) and "breaks the critic" in str(results[1])
    assert all(not isinstance(r, Exception) and r.text for i, r in enumerate(results) if i != 1)


def test_timeout_withdraws_the_calls_windows_and_the_engine_keeps_serving(minilm_tokenizer):
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=1, delay=0.05)
    engine = CPRSEngine(critic, max_wait_ms=0)
    long_text = " ".join(text_about("glacier", i) for i in range(5))
    with pytest.raises(TimeoutError, match="timeout"):
        engine.compress("glacier", [long_text], target_ratio=0.2, timeout=0.1)
    time.sleep(0.1)
    assert engine.stats()["queued_windows"] == 0
    [res] = engine.compress("zebra", [text_about("zebra", 1)], target_ratio=0.3)
    assert res.text


async def test_cancelled_acompress_withdraws_its_windows(minilm_tokenizer):
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=1, delay=0.05)
    engine = CPRSEngine(critic, max_wait_ms=0)
    long_text = " ".join(text_about("glacier", i) for i in range(5))
    task = asyncio.create_task(engine.acompress("glacier", [long_text], target_ratio=0.2))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert engine.stats()["queued_windows"] == 0
    with pytest.raises(TimeoutError):
        await engine.acompress("glacier", [long_text], target_ratio=0.2, timeout=0.05)
    [res] = await engine.acompress("zebra", [text_about("zebra", 2)], target_ratio=0.3)
    assert res.text


def test_a_full_queue_refuses_with_a_clear_error(minilm_tokenizer):
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=1, delay=0.05)
    scheduler = BatchScheduler([critic], batch_size=1, max_wait_ms=0, max_queue_windows=3)
    layout = PromptLayout(head=(101, 102, 102), tail=(102,))
    rows = [(layout, np.arange(1000, 1010)) for _ in range(3)]
    first = scheduler.submit(rows)
    with pytest.raises(QueueFullError, match="max_queue_windows=3"):
        scheduler.submit(rows)
    assert len(first.result(timeout=5)) == 3


def test_replicas_take_batches_as_they_free_up(minilm_tokenizer):
    critics = [SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=2, delay=0.02) for _ in range(2)]
    engine = CPRSEngine(critics[0], replicas=[critics[1]], max_wait_ms=0)
    [res] = engine.compress("zebra", [" ".join(text_about("zebra", i) for i in range(4))], target_ratio=0.3)
    assert res.text and all(c.rows_per_batch for c in critics)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_engine_works_in_a_forked_child(minilm_tokenizer):
    engine = CPRSEngine(KeywordCritic(minilm_tokenizer, window_tokens=64, batch_size=4))
    engine.compress("zebra", [text_about("zebra", 0)], target_ratio=0.3)  # worker threads now running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: threads did not survive the fork; the scheduler must start new ones
        try:
            [res] = engine.compress("zebra", [text_about("zebra", 1)], target_ratio=0.3, timeout=20)
            os.write(write, b"ok" if res.text else b"empty")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 10) == b"ok" and status == 0


def test_an_engine_nobody_holds_is_freed_with_its_critic_and_threads(minilm_tokenizer):
    import gc
    import weakref

    engine = CPRSEngine(KeywordCritic(minilm_tokenizer, window_tokens=64, batch_size=4))
    engine.compress("zebra", [text_about("zebra", 0)], target_ratio=0.3)
    critic, scheduler = weakref.ref(engine.critic), weakref.ref(engine.scheduler)
    threads = list(engine.scheduler._threads)
    del engine
    deadline = time.monotonic() + 5  # an idle worker holds its scheduler for at most IDLE_POLL_S at a time
    while (critic() is not None or scheduler() is not None) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.1)
    assert critic() is None and scheduler() is None
    for thread in threads:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in threads)


def test_close_fails_queued_calls_and_a_later_call_starts_again(minilm_tokenizer):
    from cprs_integrations.engine.scheduler import CallCancelledError

    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=1, delay=0.05)
    engine = CPRSEngine(critic, max_wait_ms=0)
    long_text = " ".join(text_about("glacier", i) for i in range(5))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            engine.compress("glacier", [long_text], target_ratio=0.2)
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.2)
    engine.close()
    thread.join(timeout=10)
    assert isinstance(outcome[0], CallCancelledError)
    [res] = engine.compress("zebra", [text_about("zebra", 1)], target_ratio=0.3)
    assert res.text


def test_a_worker_still_busy_after_close_stops_after_its_batch(minilm_tokenizer, monkeypatch):
    from cprs_integrations.engine import scheduler as scheduler_module
    from cprs_integrations.engine.scheduler import CallCancelledError

    monkeypatch.setattr(scheduler_module, "CLOSE_WAIT_S", 0.01)
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=1, delay=0.5)
    engine = CPRSEngine(critic, max_wait_ms=0)
    long_text = " ".join(text_about("glacier", i) for i in range(5))
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.compress("glacier", [long_text], target_ratio=0.2)
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=run)
    caller.start()
    deadline = time.monotonic() + 10
    while not engine.scheduler._threads and time.monotonic() < deadline:
        time.sleep(0.01)
    [old_worker] = engine.scheduler._threads
    time.sleep(0.1)  # inside its first 0.5 s batch
    engine.close()  # gives up waiting after 0.01 s
    assert old_worker.is_alive()
    [res] = engine.compress("zebra", [text_about("zebra", 1)], target_ratio=0.3)  # new workers serve it
    assert res.text
    old_worker.join(timeout=5)
    assert not old_worker.is_alive()  # it did not go on serving beside the new worker
    caller.join(timeout=10)
    assert isinstance(outcome[0], CallCancelledError)


def test_no_call_is_taken_once_the_interpreter_exits(minilm_tokenizer, monkeypatch):
    from cprs_integrations.engine import scheduler as scheduler_module
    from cprs_integrations.engine.scheduler import CallCancelledError

    engine = CPRSEngine(SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=1, delay=0.0), max_wait_ms=0)
    monkeypatch.setattr(scheduler_module, "_EXITING", True)
    with pytest.raises(CallCancelledError, match="exiting"):
        engine.compress("zebra", [text_about("zebra", 1)], target_ratio=0.3)


def test_a_critic_that_returns_too_few_arrays_is_an_error_not_a_hang(minilm_tokenizer):
    class Short(KeywordCritic):
        def score_windows(self, layout, windows):
            return super().score_windows(layout, windows)[:-1]

    engine = CPRSEngine(Short(minilm_tokenizer, window_tokens=64, batch_size=4))
    with pytest.raises(RuntimeError, match="score arrays for"):
        engine.compress("zebra", [" ".join(text_about("zebra", i) for i in range(3))], target_ratio=0.3)


async def test_ascore_equals_score_and_cancelling_it_withdraws_its_windows(minilm_tokenizer):
    critic = SlowCritic(minilm_tokenizer, window_tokens=64, batch_size=1, delay=0.05)
    engine = CPRSEngine(critic, max_wait_ms=0)
    text = text_about("zebra", 3)
    [sync] = engine.score("zebra", [text])
    [awaited] = await engine.ascore("zebra", [text])
    np.testing.assert_array_equal(sync.probs, awaited.probs)
    long_text = " ".join(text_about("glacier", i) for i in range(5))
    task = asyncio.create_task(engine.ascore("glacier", [long_text]))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert engine.stats()["queued_windows"] == 0


EXIT_WHILE_SCORING = """
import sys, threading, time
from cprs_integrations import CPRSEngine
from cprs_integrations.training.data import essay_text

engine = CPRSEngine.from_pretrained(sys.argv[1], device="cpu", dtype="float32", window_tokens=64)
caller = threading.Thread(
    target=engine.compress, args=("what did he say about startups?", [essay_text()[:20000]] * 4), daemon=True
)
caller.start()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    stats = engine.stats()
    if stats["windows"] > 0 and stats["queued_windows"] > 0:
        print("exiting while scoring", flush=True)
        break
    time.sleep(0.005)
"""


def test_the_process_exits_cleanly_while_a_worker_is_scoring(tiny_encoder_dir):
    # A daemon worker inside torch when Python finalizes aborted the process (exit code 134, "terminate called
    # without an active exception", pytorch/pytorch#38228): the schedulers are closed at exit.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", EXIT_WHILE_SCORING, str(tiny_encoder_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "exiting while scoring" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr
