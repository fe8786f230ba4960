"""The aggregator's event loop: uvloop when it is asked for and importable, else asyncio's own.

`aggregator.event_loop` ("uvloop", the default, or "asyncio") picks it; a missing or broken
uvloop falls back to asyncio with one warning, never a failed start. The loop that runs is
logged at start and shown in `/api/v1/status` (`gateway.event_loop`).

    run(main(), settings.aggregator.event_loop)   # instead of asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("legion.aggregator.event_loop")

EVENT_LOOPS = ("uvloop", "asyncio")
"""The values `aggregator.event_loop` accepts."""

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(wanted: str) -> tuple[LoopFactory, str]:
    """The factory of the loop `wanted` names, and the name of the loop it makes."""
    if wanted == "uvloop":
        try:
            import uvloop
        except ImportError as exc:  # not installed (or no wheel for this platform)
            log.warning("event=event_loop_fallback wanted=uvloop running=asyncio error=%s", exc)
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio": which implementation `loop` is."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"


def run(main: Coroutine[Any, Any, T], wanted: str) -> T:
    """`asyncio.run(main)` on the loop `wanted` names (see `loop_factory`)."""
    factory, running = loop_factory(wanted)
    log.info("event=event_loop wanted=%s running=%s", wanted, running)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
