"""The engine without HTTP: what it delivers, and that requests admitted together share steps.
Jobs are submitted before the worker starts, so what is batched does not depend on timing."""

from __future__ import annotations

import threading

import pytest

from charnn.checkpoints.loading import load_checkpoint
from charnn.config.sample import SampleConfig
from charnn.generation.sampler import sample_batch
from charnn.serve.engine import Engine, Job


def run_jobs(loaded, jobs: list[Job], max_rows: int = 64) -> Engine:
    engine = Engine(loaded, max_rows=max_rows)
    ended = threading.Semaphore(0)
    for job in jobs:
        deliver = job.deliver

        def counted(event, deliver=deliver) -> None:
            deliver(event)
            if event[0] == "end":
                ended.release()

        job.deliver = counted
        engine.submit(job)
    engine.start()
    for _ in jobs:
        assert ended.acquire(timeout=120)
    engine.stop()
    engine.join(timeout=30)
    return engine


@pytest.fixture(scope="module")
def loaded(trained):
    return load_checkpoint(trained[2])


def test_a_stream_delivers_a_piece_every_step_and_then_its_end(loaded):
    events: list = []
    config = SampleConfig(prime="The ", length=200, seed=4)
    run_jobs(loaded, [Job(config, events.append, stream=True)])
    kinds = [kind for kind, _ in events]
    assert kinds == ["pieces"] * 200 + ["end"]  # one piece a character, then the end
    text = "".join(piece for kind, value in events[:-1] for _, piece in value)
    result = events[-1][1]
    assert text == result.texts[0] == sample_batch(loaded, config)[0]  # as `charnn sample` writes
    assert result.finish_reasons == ["length"]


def test_requests_admitted_together_share_every_step(loaded):
    length = 100
    results: list = []
    jobs = [Job(SampleConfig(prime="The ", length=length, seed=i), results.append)
            for i in range(16)]  # fmt: skip
    engine = run_jobs(loaded, jobs)
    assert engine.rows_stepped == 16 * (length - 1)  # every character but the first a row...
    assert engine.ticks == length - 1  # ...and all 16 rows in each step
    assert [len(result.texts[0]) for _, result in results] == [length] * 16


def test_requests_past_the_batch_limit_wait_their_turn(loaded):
    jobs = [Job(SampleConfig(length=50, seed=i), lambda event: None) for i in range(4)]
    engine = run_jobs(loaded, jobs, max_rows=2)
    assert engine.rows_stepped == 4 * 49 and engine.ticks == 2 * 49  # two at a time
