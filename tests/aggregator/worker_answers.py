"""Answer the jobs a scheduler sent with the real worker code (`legion.analytics.worker`)."""

from __future__ import annotations

from legion.aggregator.analytics_bridge import JobBook
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
