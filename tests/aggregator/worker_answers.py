"""Answer the jobs a scheduler sent with the real worker code (`legion.analytics.worker`), and
a bridge set up as its `run()` would, for tests that drive it pass by pass."""

from __future__ import annotations

import zmq

from legion.aggregator.analytics_bridge import JobBook
from legion.aggregator.analytics_bridge.bridge import AnalyticsBridge
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.store import IncomingBatch, Store
from legion.analytics.worker import process
from legion.proto.jobs import Job, decode_job, encode_result


def answer(book: JobBook, frames: list[bytes]) -> list[Job]:
    """Each job frame decoded, processed by the worker function and its result fed to `book`;
    the jobs, in order."""
    jobs = [decode_job(f) for f in frames]
    for job in jobs:
        res = process(job, "w1")
        assert res.ok, res.error
        book.on_result(encode_result(res))
    return jobs


def unstarted_bridge(config: AggregatorSettings, store: Store
                     ) -> tuple[AnalyticsBridge, list[bytes], list[IncomingBatch]]:
    """A bridge with the job book its `run()` would set up, without its thread and sockets:
    (bridge, the job frames it sends, the batches of scores it submits)."""
    sent: list[bytes] = []
    submitted: list[IncomingBatch] = []
    bridge = AnalyticsBridge(zmq.Context.instance(), config, (b"", b""), store, submitted.append)
    bridge._book = JobBook(sent.append, timeout_secs=30)
    return bridge, sent, submitted
