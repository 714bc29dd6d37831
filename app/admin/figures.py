"""The analytics the admin pages show, or None where there are none to show.

The analytics module is built apart from the pages. Until the function a page needs is there,
the page says plainly that the figures are not available and shows everything else."""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.analytics.models import AbTest, Overview, VariantFigures
from app.db import utcnow
from app.shops.models import Shop

PERIODS = (7, 30, 90)


def _analytics(module: str, name: str) -> Callable[..., Any] | None:
    try:
        found = getattr(importlib.import_module(f"app.analytics.{module}"), name, None)
    except ImportError:
        return None
    return found if callable(found) else None


async def overview(session: AsyncSession, shop: Shop, days: int) -> Overview | None:
    """Emails, clicks, orders and revenue per flow for the last `days` days, with a series per
    day; None when the analytics are not available."""
    compute = _analytics("repository", "overview")
    if compute is None:
        return None
    result = await compute(session, shop, days=days, now=utcnow())
    assert isinstance(result, Overview)
    return result


@dataclass(frozen=True)
class TestResults:
    test: AbTest
    variants: list[VariantFigures]  # the holdout last, when it has a share


async def ab_tests(session: AsyncSession, shop: Shop) -> list[TestResults] | None:
    """The shop's A/B tests with each variant's figures, newest first; None when tests are not
    available."""
    list_tests = _analytics("abtests", "list_tests")
    results = _analytics("abtests", "results")
    if list_tests is None or results is None:
        return None
    tests = sorted(await list_tests(session, shop), key=lambda t: t.started_at, reverse=True)
    return [TestResults(test, await results(session, test)) for test in tests]
