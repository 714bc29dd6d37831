"""What the flows earned (the overview), and A/B tests of a step with a holdout group.

The figures and the tests are app.analytics's; this module only authenticates and shapes them.
Money is a string, so no client rounds it through a float."""

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from app.analytics import abtests
from app.analytics import repository as analytics
from app.analytics.abtests import AbTestError
from app.analytics.models import AbTest
from app.api.auth import ShopDep
from app.api.errors import RESPONSES, RowId, invalid
from app.db import SessionDep, utcnow
from app.mail.i18n import LANGUAGES
from app.shops.models import Shop

router = APIRouter(prefix="/api", tags=["analytics"], responses=RESPONSES)

PERIODS = (7, 30, 90)


class FlowFigures(BaseModel):
    flow: str
    emails: int
    clicks: int
    orders: int
    revenue: str  # attributed revenue: the recovered carts and orders that followed a click
    recovered: str  # the part from the very carts the reminders were about
    conversion: float


class DayFigures(BaseModel):
    day: date
    revenue: dict[str, str]  # flow → attributed revenue that day


class Overview(BaseModel):
    days: int
    currency: str
    revenue: str
    flows: list[FlowFigures]
    series: list[DayFigures]


@router.get("/overview")
async def overview(
    shop: ShopDep,
    session: SessionDep,
    days: Annotated[int, Query(description="7, 30 or 90")] = 30,
) -> Overview:
    """Emails, clicks, attributed orders and revenue per flow over the last `days` days, and the
    revenue per day."""
    if days not in PERIODS:
        raise invalid("days", "days must be 7, 30 or 90")
    figures = await analytics.overview(session, shop, days=days, now=utcnow())
    return Overview(
        days=figures.days,
        currency=figures.currency,
        revenue=str(figures.revenue),
        flows=[
            FlowFigures(
                flow=f.flow,
                emails=f.emails,
                clicks=f.clicks,
                orders=f.orders,
                revenue=str(f.revenue),
                recovered=str(f.recovered),
                conversion=f.conversion,
            )
            for f in figures.flows
        ],
        series=[
            DayFigures(day=d.day, revenue={flow: str(v) for flow, v in d.revenue.items()})
            for d in figures.series
        ],
    )


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    weight: float = Field(default=1, gt=0)
    template: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The variant's subject line per language ({{ first_name }} and {{ shop_name }} allowed).
    subject: dict[str, str] | None = Field(default=None, examples=[{"en": "Still thinking?"}])


class NewTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: str
    step_key: str
    variants: list[Variant] = Field(description="2 to 4 variants with distinct keys")
    holdout: float = Field(default=0.0, ge=0, le=0.5)
    min_recipients: int = Field(default=500, ge=1)


class AbTestOut(BaseModel):
    id: int
    flow: str
    step_key: str
    variants: list[dict[str, Any]]
    holdout: float
    min_recipients: int
    winner: str | None
    started_at: datetime
    ended_at: datetime | None


class VariantFigures(BaseModel):
    key: str  # the variant's key, or "holdout"
    weight: float
    recipients: int
    clicks: int
    orders: int
    revenue: str
    revenue_per_recipient: str
    probability_best: float


class TestResults(BaseModel):
    test: AbTestOut
    results: list[VariantFigures]


def _test(test: AbTest) -> AbTestOut:
    return AbTestOut.model_validate(test, from_attributes=True)


async def _shop_test(session: SessionDep, shop: Shop, test_id: int) -> AbTest:
    test = await abtests.get_test(session, shop, test_id)
    if test is None:
        raise HTTPException(404, "no such test")
    return test


@router.get("/tests")
async def list_tests(shop: ShopDep, session: SessionDep) -> list[AbTestOut]:
    """The shop's tests, running and ended."""
    return [_test(test) for test in await abtests.list_tests(session, shop)]


@router.post("/tests", status_code=201, responses={409: {"description": "A test runs there"}})
async def start_test(new: NewTest, shop: ShopDep, session: SessionDep) -> AbTestOut:
    """Start a test on one step: recipients are split by weight between the variants, and the
    holdout share gets no email at all."""
    for number, variant in enumerate(new.variants):
        for lang in (variant.subject or {}).keys() - set(LANGUAGES):
            raise invalid(f"variants.{number}.subject.{lang}", f"languages: {', '.join(LANGUAGES)}")
    variants = [_as_step_fields(variant.model_dump(exclude_none=True)) for variant in new.variants]
    try:
        test = await abtests.start_test(
            session, shop, new.flow, new.step_key, variants, new.holdout, new.min_recipients
        )
    except AbTestError as exc:
        if str(exc).startswith("a test already runs"):
            raise HTTPException(409, str(exc)) from exc
        raise invalid(_named_field(str(exc)), str(exc)) from exc
    await session.commit()
    return _test(test)


def _named_field(message: str) -> str:
    """The field a refusal from app.analytics.abtests is about: its messages start with it."""
    first = message.split(" ", 1)[0]
    if first in NewTest.model_fields:
        return first
    if message.startswith("unknown flow"):
        return "flow"
    if " has no step " in message or message.endswith("sends no email"):
        return "step_key"
    return "variants"


@router.get("/tests/{test_id}")
async def test_results(test_id: RowId, shop: ShopDep, session: SessionDep) -> TestResults:
    """The test and its figures per variant (and the holdout), with the chance each is best."""
    test = await _shop_test(session, shop, test_id)
    figures = await abtests.results(session, test)
    return TestResults(
        test=_test(test),
        results=[
            VariantFigures(
                key=v.key,
                weight=v.weight,
                recipients=v.recipients,
                clicks=v.clicks,
                orders=v.orders,
                revenue=str(v.revenue),
                revenue_per_recipient=str(v.revenue_per_recipient),
                probability_best=v.probability_best,
            )
            for v in figures
        ],
    )


@router.post("/tests/{test_id}/stop")
async def stop_test(test_id: RowId, shop: ShopDep, session: SessionDep) -> AbTestOut:
    """End a test: from now on the step sends as it did before the test."""
    test = await abtests.stop_test(session, await _shop_test(session, shop, test_id))
    await session.commit()
    return _test(test)


def _as_step_fields(variant: dict[str, Any]) -> dict[str, Any]:
    """A variant's subject per language is the step's merchant words for that language."""
    subjects = variant.pop("subject", None) or {}
    if subjects:
        variant["overrides"] = {lang: {"subject": text} for lang, text in subjects.items()}
    return variant
