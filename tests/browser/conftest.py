"""The admin in a real browser: Playwright's async API drives Debian's Chromium (never a browser
Playwright downloads) against the live app of the `server` fixture, on this test's event loop.

The tests skip when /usr/bin/chromium is missing, except in CI (`CI` set), where .ci/run
installs it first and a missing browser must fail. Every test keeps a full-page screenshot of
each page it visits in REBOUND_SCREENSHOTS (default ./.screenshots/), one folder per test."""

import os
import re
import shutil
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
)

from app.api.auth import admin_login_link
from app.settings import get_settings
from app.shops.models import Shop

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SCREENSHOTS = Path(os.environ.get("REBOUND_SCREENSHOTS") or ROOT / ".screenshots").resolve()
# What a merchant's laptop shows; full-page screenshots grow as tall as the page.
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
REFUSED = "Failed to load resource: the server responded with a status of 422"
MOST_TABS = 120  # a keyboard walk that has not reached its target by then never will


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists() or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(
        reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (CI installs it)"
    )
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # The outcome of each phase, for the `admin` fixture to screenshot a failure.
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_TAKEN: list[Path] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TAKEN:
        terminalreporter.write_line(f"browser screenshots ({len(_TAKEN)}): {SCREENSHOTS}")


class Admin:
    """One merchant's browser tab on the live admin, and the screenshots of what it showed."""

    def __init__(self, page: Page, base_url: str, folder: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.folder = folder
        self.problems: list[str] = []  # script errors and console errors (CSP refusals too)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx fetch; a 422 is the API refusing a value, which tests provoke.
        if message.type == "error" and not message.text.startswith(REFUSED):
            self.problems.append(f"console error on {self.page.url}: {message.text}")

    async def sign_in(self, shop: Shop) -> None:
        """Open the one-time link `rebound admin-link` prints, as the merchant would; it lands
        on the overview with the session cookie set."""
        link = admin_login_link(shop)
        public = get_settings().public_url
        assert link.startswith(public + "/admin/login?token=")
        await self.page.goto(self.base_url + link.removeprefix(public))
        assert self.path() == "/admin", self.page.url
        await self.shot("signed-in")

    async def visit(self, path: str, label: str | None = None) -> None:
        response = await self.page.goto(self.base_url + path)
        assert response is not None and response.status == 200, path
        await self.shot(label or (path.strip("/").replace("/", "-") or "home"))

    async def reload(self, label: str) -> None:
        await self.page.reload()
        await self.shot(label)

    def path(self) -> str:
        return httpx.URL(self.page.url).path

    async def shot(self, label: str) -> Path:
        """A full-page screenshot of what the merchant sees now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{len(list(self.folder.glob('*.png'))) + 1:02d}-{_slug(label)}.png"
        target = self.folder / name
        # Transitions finished: a switch is shown where it ends, not halfway.
        await self.page.screenshot(path=str(target), full_page=True, animations="disabled")
        _TAKEN.append(target)
        return target

    async def tab_to(self, target: Locator) -> None:
        """Press Tab until `target` has the focus (if it has not), as a keyboard user moves
        through the page."""
        for _ in range(MOST_TABS):
            if await target.evaluate("element => element === document.activeElement"):
                return
            await self.page.keyboard.press("Tab")
        focused = await self.page.evaluate(
            "document.activeElement && document.activeElement.outerHTML"
        )
        raise AssertionError(f"Tab never reached {target}; focus is on {focused}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "page"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs it with apt-get")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        await launched.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Generator[Path, None, None]:
    """This test's screenshot folder, emptied of an earlier run's."""
    folder = SCREENSHOTS / _slug(request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"screenshots: {folder}")
    yield folder


@pytest.fixture
async def admin(
    browser: Browser,
    server: httpx.AsyncClient,
    screenshots: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Admin]:
    """A fresh browser profile (no cookies) on the live app; not signed in yet."""
    context = await browser.new_context(viewport=VIEWPORT, locale="en-GB")
    context.set_default_timeout(10_000)
    tab = Admin(await context.new_page(), str(server.base_url).rstrip("/"), screenshots)
    yield tab
    reports = request.node.stash.get(_REPORTS, {})
    if "call" in reports and reports["call"].failed:
        await tab.shot("failed")
    await context.close()
    assert tab.problems == [], "the browser reported errors:\n" + "\n".join(tab.problems)
