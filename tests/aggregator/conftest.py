"""Fixtures of the dashboard's browser tests (what they share is in dashboard_harness.py, imported
here only when a test asks for a browser, so other tests never need playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    """Playwright, with the screenshot folder made (printed for the person running the tests)."""
    from tests.aggregator.dashboard_harness import ARTIFACTS, playwright_api

    ARTIFACTS.mkdir(exist_ok=True)
    print(f"screenshots: {ARTIFACTS}")
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
    """Debian's chromium, headless, WebGL through SwiftShader."""
    from tests.aggregator.dashboard_harness import ARGS, CHROMIUM

    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    yield b
    b.close()
