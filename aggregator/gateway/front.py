"""The gateway's listener with a fast path for the hot read: a `GET /api/v1/query` that the query
head answers is answered here, before aiohttp's request machinery; every other request is aiohttp's.

Each connection starts with `QueryFront`. Each data chunk it receives is answered here only when it
is one whole, plain HTTP/1.1 request (`plain_query`: nothing after it, a short head, only the
headers listed, printable values, no Origin) whose bearer token may read, whose parameters parse
(`api.parse_query`) with a step: the 200 answer aiohttp's `api.query` would give, from the query
head (`query_now`) or, when it misses (a write holds the store), from the store on a thread as
`api.query` does, reading nothing meanwhile (if that fails, aiohttp gets the request), byte for
byte but the Date (tests/aggregator/test_gateway_front.py). Anything else, including every error, a
refused token, a CORS request or a HEAD, is handed to aiohttp with the bytes received, untouched:
those answers, their audit records and failure counters are aiohttp's own, and from then on the
connection is aiohttp's. After a fast answer a keep-alive connection stays here for its next
request (a poller's or `requests.Session`'s), or is closed (`Connection: close`). Requests answer
in order: a chunk holding more or less than one request (pipelined, split) is handed over whole,
and while the client does not read its answers the front reads no more. A connection in the front
is closed after `KEEPALIVE_S` from its start or its last answer (looked at every `SWEEP_S`: one
timer per listener, not one per connection), as aiohttp's own connections are.

aiohttp's own part of a request costs more CPU than the query (docs/peers.md): this path is
what brings a one-series query to VictoriaMetrics' latency.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from typing import Any, NamedTuple, cast

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from multidict import MultiMapping
from yarl import URL

from legion.aggregator.gateway import api
from legion.aggregator.gateway.access_log import ACCESS_LOG, log_access
from legion.aggregator.gateway.auth import Forbidden, action_of, authorize
from legion.aggregator.gateway.headers import security_headers
from legion.aggregator.gateway.keys import STORE_KEY, TOKENS_KEY
from legion.aggregator.gateway.resolution import RESOLUTION_HEADER
from legion.aggregator.gateway.timefmt import now_ms

KEEPALIVE_S = 3630.0
"""aiohttp's own keep-alive timeout, also its limit for a connection that sends nothing."""
SWEEP_S = 30.0
"""How often connections that sent nothing yet are looked at."""
MAX_HEAD = 8190
"""Longest request head answered here (aiohttp's line limit); a longer one is aiohttp's."""
PATH = "/api/v1/query"
_START = b"GET " + PATH.encode() + b"?"
_TARGET = re.compile(rb"/api/v1/query\?[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*\Z")
_NAME = re.compile(rb"[A-Za-z0-9-]+\Z")
_VALUE = re.compile(rb"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")
_HEADERS = frozenset({b"host", b"authorization", b"user-agent", b"accept", b"accept-encoding",
                      b"accept-language", b"connection", b"cache-control", b"pragma",
                      b"content-type", b"referer", b"sec-fetch-site", b"sec-fetch-mode",
                      b"sec-fetch-dest", b"sec-ch-ua", b"sec-ch-ua-mobile",
                      b"sec-ch-ua-platform", b"dnt", b"priority"})
"""The only headers a request answered here may carry (each at most once): none changes
`api.query`'s answer (a Content-Type without a body: `legionctl`'s client sends one; the rest
of the second line: a browser's same-origin `fetch`, the dashboard's)."""


def plain_query(data: bytes) -> tuple[str, dict[bytes, bytes]] | None:
    """(target, lower-cased headers) of one whole plain `GET /api/v1/query?...` HTTP/1.1 request
    that is all of `data`; None for anything else (then aiohttp parses it)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(data) or end > MAX_HEAD or not data.startswith(_START):
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not _TARGET.match(parts[1]):
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        key = name.lower()
        value = value.strip(b" ")
        if (not sep or not _NAME.match(name) or key not in _HEADERS or key in headers
                or not _VALUE.match(value)):
            return None
        headers[key] = value
    if b"host" not in headers or headers.get(b"connection", b"keep-alive").lower() not in (
            b"close", b"keep-alive"):
        return None
    return parts[1].decode("ascii"), headers


class _Query:
    """What `api.parse_query` reads of a request: the query, decoded as aiohttp decodes it."""

    __slots__ = ("query",)

    def __init__(self, target: str) -> None:
        path, _, qs = target.partition("?")
        self.query: MultiMapping[str] = URL.build(path=path, query_string=qs,
                                                  encoded=True).query


class Asked(NamedTuple):
    """A request the front answers: `api.query`'s arguments, and whether to close after it."""

    args: dict[str, Any]
    close: bool


class QueryAnswers:
    """The fast path's answers for one app (the same store, tokens, headers as `api.query`)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._date = (0, b"")
        self.answered = 0
        """Requests answered here."""
        self._action = action_of(api.query)
        self.enabled = self._action is not None and any(
            r.method == "GET" and r.resource is not None and r.resource.canonical == PATH
            and r.handler is api.query for r in app.router.routes())
        """Off unless the app routes GET /api/v1/query to `api.query`, which declares its action
        (else aiohttp's guard refuses it: so does the front, by not answering)."""

    def ask(self, data: bytes) -> Asked | None:
        """The query of a request answered here (a plain one whose token may read, whose
        parameters parse, with a step), else None: aiohttp's."""
        head = plain_query(data) if self.enabled else None
        if head is None:
            return None
        target, headers = head
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return None
        principal = self.app[TOKENS_KEY].verify(token.decode("ascii"))
        try:
            authorize(principal, self._action)  # api.query's @requires
            args = api.parse_query(_Query(target), now_ms())
        except (Forbidden, api.BadRequest):
            return None
        if args["step_ms"] is None:  # the finest tier holding `since`: a thread hop, aiohttp's
            return None
        return Asked(args, headers.get(b"connection", b"").lower() == b"close")

    def reply(self, rows: list[dict[str, Any]], close: bool) -> bytes | None:
        """The whole 200 answer of `rows`; None for too many (aiohttp's 400)."""
        if len(rows) > api.QUERY_MAX_POINTS:
            return None
        self.answered += 1
        return self._render(api.query_body(rows), close)

    def _render(self, body: bytes, close: bool) -> bytes:
        """The answer as aiohttp writes `api.query`'s response after the middleware's headers."""
        lines = ["HTTP/1.1 200 OK", "Content-Type: application/json",
                 f"{RESOLUTION_HEADER}: raw"]
        lines += [f"{k}: {v}" for k, v in security_headers(self.app, True)]
        lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines).encode() + b"\r\nDate: " + self._http_date() + b"\r\nServer: " \
            + SERVER_SOFTWARE.encode() + (b"\r\nConnection: close" if close else b"")
        return head + b"\r\n\r\n" + body

    def _http_date(self) -> bytes:
        now = int(time.time())
        if now != self._date[0]:
            self._date = (now, email.utils.formatdate(now, usegmt=True).encode())
        return self._date[1]


class QueryFront(asyncio.Protocol):
    """One connection while its requests are answered here (`QueryAnswers`); the first that is
    not is handed to aiohttp, with the connection."""

    def __init__(self, site: FrontSite) -> None:
        self._site = site
        self._transport: asyncio.Transport | None = None
        self.since = 0.0
        """When the connection was made or last answered (`time.monotonic`)."""
        self._paused = False
        self._later: bytes | None = None
        """While a request is answered from a thread, what came after it (else None)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.since = time.monotonic()
        self._site.waiting.add(self)

    def data_received(self, data: bytes) -> None:
        if self._later is not None:  # a request is being answered from a thread: after it
            self._later += data
            return
        began = time.monotonic()
        answers = self._site.answers
        try:
            asked = answers.ask(data)
            rows = None if asked is None else answers.app[STORE_KEY].query_now(**asked.args)
            answer = None if asked is None or rows is None else answers.reply(rows, asked.close)
        except Exception:  # noqa: BLE001 - aiohttp answers it, and logs what went wrong
            asked = answer = None
        if asked is not None and answer is None and rows is None:
            self._answer_later(data, asked, began)  # not in the head now (a write holds it)
        elif asked is None or answer is None:
            self.hand_over(data)
        else:
            self._send(answer, asked.close, began)

    def _send(self, answer: bytes, close: bool, began: float) -> None:
        t = self._transport
        assert t is not None
        t.write(answer)
        log_access(ACCESS_LOG, "GET", PATH, 200, time.monotonic() - began,
                   _remote(t.get_extra_info("peername")))
        if close:
            self._forget()
            t.close()
        else:  # keep-alive: the next request comes here too
            self.since = time.monotonic()

    def _answer_later(self, data: bytes, asked: Asked, began: float) -> None:
        """Answer from the store on a thread, as `api.query` does when the head misses; read
        nothing meanwhile. If that fails, aiohttp gets the request (and what came after)."""
        assert self._transport is not None
        self._later = b""
        self.since = time.monotonic()  # busy, not idle
        self._transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._from_store(data, asked, began))
        self._site.tasks.add(task)
        task.add_done_callback(self._site.tasks.discard)

    async def _from_store(self, data: bytes, asked: Asked, began: float) -> None:
        answers = self._site.answers
        try:
            rows = await asyncio.to_thread(answers.app[STORE_KEY].query, **asked.args)
            answer = answers.reply(rows, asked.close)
        except Exception:  # noqa: BLE001 - aiohttp answers it, and logs what went wrong
            answer = None
        t = self._transport
        assert t is not None
        after, self._later = self._later or b"", None
        if t.is_closing():
            return
        if not self._paused:
            t.resume_reading()
        if answer is None:
            self.hand_over(data + after)
            return
        self._send(answer, asked.close, began)
        if after and not t.is_closing():
            self.data_received(after)

    def pause_writing(self) -> None:
        """The client reads no answers: read no more requests until it does."""
        assert self._transport is not None
        self._paused = True
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        assert self._transport is not None
        self._paused = False
        if self._later is None:
            self._transport.resume_reading()

    def hand_over(self, data: bytes) -> None:
        """Give the connection, and the bytes received, to aiohttp's request handler."""
        t = self._transport
        assert t is not None
        self._forget()
        handler = self._site.runner.server
        if handler is None:  # the runner is being cleaned up: no more requests
            t.close()
            return
        protocol = handler()
        t.set_protocol(protocol)
        protocol.connection_made(t)
        if self._paused:  # aiohttp waits for the client to read, and reads again itself
            protocol.pause_writing()
            t.resume_reading()
        if data:
            protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def close(self) -> None:
        """Close a connection that is idle in the front."""
        self._forget()
        if self._transport is not None:
            self._transport.close()

    def _forget(self) -> None:
        self._site.waiting.discard(self)


def _remote(peer: Any) -> str | None:
    """`request.remote` of aiohttp: the peer's host."""
    return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None


class FrontSite(web.TCPSite):
    """aiohttp's TCP site whose connections start with `QueryFront`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, fast: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.runner = runner
        self.answers = QueryAnswers(runner.app)
        self.answers.enabled &= fast
        self.waiting: set[QueryFront] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        """Answers being read from the store on a thread."""
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Listen (as `TCPSite.start`, with `QueryFront` as the protocol)."""
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: QueryFront(self), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        """Close the front's connections idle for `KEEPALIVE_S`."""
        now = time.monotonic()
        for front in [f for f in self.waiting if now - f.since >= KEEPALIVE_S]:
            front.close()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    async def stop(self) -> None:
        """Stop listening and close the front's connections."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for front in list(self.waiting):
            front.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await super().stop()
