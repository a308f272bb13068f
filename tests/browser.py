"""A real browser for the page tests: Debian's Chromium, headless, driven by Playwright.

Playwright's own browser download cannot work offline; it drives the system's Chromium through
`executable_path` instead. Every page records what its console and its scripts report, so a
test can say the page raised no error.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
# Without the network flags Chromium reaches for Google's services, which this closed network
# refuses (noise, and a slower start).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def needs_browser() -> None:
    if CHROMIUM is None:
        pytest.skip("needs a real browser: apt-get install -y chromium (Debian's package)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("needs playwright (pip install -e '.[dev]')")


@dataclass
class Console:
    """What a page's console and uncaught errors said."""

    messages: list[tuple[str, str]] = field(default_factory=list)  # (type, text)

    def errors(self, allow: tuple[str, ...] = ()) -> list[str]:
        return [text for kind, text in self.messages
                if kind in ("error", "pageerror") and not any(a in text for a in allow)]


@asynccontextmanager
async def chromium() -> AsyncIterator:
    from playwright.async_api import async_playwright

    needs_browser()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser, base: str, *, width: int = 400, height: int = 900):
    """A page in its own context (its own cookies and storage: one person), with its console
    recorded on `page.console`."""
    context = await browser.new_context(base_url=base, viewport={"width": width,
                                                                 "height": height})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = await context.new_page()
    console = Console()
    page.on("console", lambda m: console.messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: console.messages.append(("pageerror", str(e))))
    page.console = console  # type: ignore[attr-defined]
    return page


async def log_in(page, username: str, password: str) -> None:
    await page.goto("/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#submit")
