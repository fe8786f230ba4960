"""The gateway's access log: one line per request, without its query string (a `?token=` must
never reach a log file), for aiohttp's answers (`AccessLogger`) and the fast query front's
(front.py) alike."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

ACCESS_LOG = logging.getLogger("legion.aggregator.gateway.access")


def log_access(lg: logging.Logger, method: str, path: str, status: int, secs: float,
               remote: str | None) -> None:
    """Write one access line. The record is made without `logging`'s search of the stack for
    the caller (a quarter of a line's cost; the line format names no function or file), then
    handled as `info` would."""
    if lg.isEnabledFor(logging.INFO):
        lg.handle(lg.makeRecord(
            lg.name, logging.INFO, "(unknown file)", 0,
            "event=http method=%s path=%s status=%s secs=%.3f remote=%s",
            (method, path, status, secs, remote), None))


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger of the gateway (`log_access`)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log_access(self.logger, request.method, request.path, response.status, time,
                   request.remote)
