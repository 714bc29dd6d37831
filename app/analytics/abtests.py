"""A/B tests of one flow step: who gets which variant, what each variant earned, and when one
has won.

- Assignment is a hash of the test and the customer's address mapped onto the weights, so it
  needs no state to be stable; the row in `ab_assignments` records it once (recipients are
  counted from those rows) and is what later steps read.
- The holdout gets no email for the step: the engine passes the step over and records it, and
  the customer counts as a recipient, so lift over no email at all shows.
- Every arm is measured alike (intention-to-treat, see `repository.variant_figures`): orders a
  recipient placed within the shop's attribution window after assignment.
- Probability to be best: each arm's conversion rate (recipients who ordered / recipients) gets
  a Beta(1 + converted, 1 + recipients - converted) posterior; Monte Carlo draws from all arms,
  counting how often each is highest. The seed is fixed, so the same figures always give the
  same probabilities.
"""

import asyncio
import functools
import hashlib
import math
import random
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.analytics import repository
from app.analytics.models import AbTest, Assignment, VariantFigures
from app.commerce.repository import normalize_email
from app.db import utcnow
from app.shops import repository as shops
from app.shops.models import Shop
from flows import repository as flows_repository
from flows.definitions import FLOW_NAMES, FlowDefinitionError, validate_steps
from flows.models import Send

HOLDOUT = "holdout"
DRAWS = 20_000
SEED = 20_260_101
WIN_PROBABILITY = 0.90
MAX_HOLDOUT = 0.5
MIN_VARIANTS, MAX_VARIANTS = 2, 4
# What a variant may not change: what the step is, whom it is for and when it runs.
_NOT_VARIED = (
    "key", "weight", "delay", "after", "enabled", "action", "marketing", "conditions", "variants",
)  # fmt: skip


class AbTestError(ValueError):
    """A test that cannot be started; the message says why."""


def key_of_step(spec: dict[str, Any], index: int) -> str:
    """A step's key; steps saved before keys existed are named by their place, as
    flows/definitions.py names them."""
    return str(spec.get("key") or f"step_{index + 1}")


def variant_step(spec: dict[str, Any], test: AbTest, variant: str) -> dict[str, Any]:
    """The step as `variant` (one of the test's keys, not the holdout) sends it: the variant's
    fields (template, overrides, offer, …) over the step's own."""
    chosen = next((v for v in test.variants if v["key"] == variant), None)
    if chosen is None:
        raise ValueError(f"test {test.id} has no variant {variant!r}")
    return _merged(spec, chosen)


def _merged(spec: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    return {**spec, **{k: v for k, v in variant.items() if k not in _NOT_VARIED}}


def assign(test: AbTest, email: str) -> str:
    """The variant key (or "holdout") for this customer in this test: the same every time.

    A SHA-256 of the test id and the normalized address, read as a number in [0, 1): below the
    holdout share is the holdout; the rest of the line is split by the variants' weights."""
    assert test.id is not None
    address = normalize_email(email) or ""
    digest = hashlib.sha256(f"{test.id}:{address}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < test.holdout:
        return HOLDOUT
    point = (point - test.holdout) / (1 - test.holdout)
    total = sum(float(v["weight"]) for v in test.variants)
    reached = 0.0
    for variant in test.variants:
        reached += float(variant["weight"]) / total
        if point < reached:
            return str(variant["key"])
    return str(test.variants[-1]["key"])  # float rounding at the very end of the line


async def variant_for(
    session: AsyncSession,
    shop_id: int,
    flow: str,
    step_key: str,
    email: str,
    *,
    now: datetime | None = None,
) -> tuple[AbTest, str] | None:
    """The running test on this step and the customer's variant in it (assigned once, then
    kept); None when no test runs on the step."""
    test = await repository.running_test(session, shop_id, flow, step_key)
    address = normalize_email(email)
    if test is None or test.id is None or address is None:
        return None
    await repository.insert_assignment(
        session,
        Assignment(
            shop_id=shop_id,
            test_id=test.id,
            email=address,
            variant=assign(test, address),
            assigned_at=now or utcnow(),
        ),
    )
    assignment = await repository.get_assignment(session, test.id, address)
    assert assignment is not None
    return test, assignment.variant


async def record_send(session: AsyncSession, test: AbTest, variant: str, send: Send) -> None:
    """Mark a claimed send as the variant's email, and link it to the customer's assignment
    (its clicks are the variant's)."""
    assert test.id is not None and send.id is not None
    send.variant = variant
    session.add(send)
    await repository.link_send(session, test.id, normalize_email(send.email) or "", send.id)


def probability_best(
    arms: Sequence[tuple[int, int]], *, draws: int = DRAWS, seed: int = SEED
) -> list[float]:
    """For arms of (converted, recipients): the share of Monte Carlo draws from each arm's
    Beta(1 + converted, 1 + recipients - converted) posterior in which it is highest."""
    return list(_probability_best(tuple((int(w), int(n)) for w, n in arms), draws, seed))


# The draws are seeded, so equal counts give equal answers: a page load or API call whose
# counts have not moved (most of them) costs nothing, instead of half a second per test.
@functools.lru_cache(maxsize=1024)
def _probability_best(
    arms: tuple[tuple[int, int], ...], draws: int, seed: int
) -> tuple[float, ...]:
    if not arms:
        return ()
    rng = random.Random(seed)
    posteriors = [(1 + won, 1 + max(n - won, 0)) for won, n in arms]
    wins = [0] * len(arms)
    for _ in range(draws):
        samples = [rng.betavariate(a, b) for a, b in posteriors]
        wins[max(range(len(samples)), key=samples.__getitem__)] += 1
    return tuple(count / draws for count in wins)


async def results(session: AsyncSession, test: AbTest) -> list[VariantFigures]:
    """Each variant's figures in the test's order, then the holdout's (when it has a share or
    recipients). `weight` is the arm's intended share of recipients (all arms sum to 1)."""
    shop = await shops.get(session, test.shop_id)
    assert shop is not None
    figures = await repository.variant_figures(
        session, test, window_days=shop.attribution_days, currency=repository.currency_of(shop)
    )
    total = sum(float(v["weight"]) for v in test.variants)
    arms = [(str(v["key"]), (1 - test.holdout) * float(v["weight"]) / total) for v in test.variants]
    if test.holdout > 0 or HOLDOUT in figures:
        arms.append((HOLDOUT, test.holdout))
    empty = (0, 0, 0, 0, Decimal(0))
    measured = [figures.get(key, empty) for key, _ in arms]
    chances = await asyncio.to_thread(
        probability_best, [(converted, n) for n, _, _, converted, _ in measured]
    )
    return [
        VariantFigures(
            key=key,
            weight=weight,
            recipients=n,
            clicks=clicks,
            orders=orders,
            revenue=revenue,
            revenue_per_recipient=(
                (revenue / n).quantize(Decimal("0.01"), ROUND_HALF_UP) if n else Decimal(0)
            ),
            probability_best=chance,
        )
        for (key, weight), (n, clicks, orders, _, revenue), chance in zip(
            arms, measured, chances, strict=True
        )
    ]


async def choose_winner(
    session: AsyncSession, test: AbTest, *, now: datetime | None = None
) -> str | None:
    """End the test with a winner when a variant (never the holdout) is best with probability
    at least WIN_PROBABILITY, the holdout included in the comparison, and every variant has
    reached `min_recipients`. The winner, or None while the test goes on."""
    if test.ended_at is not None:
        return test.winner
    figures = [f for f in await results(session, test) if f.key != HOLDOUT]
    if not figures or any(f.recipients < test.min_recipients for f in figures):
        return None
    best = max(figures, key=lambda f: f.probability_best)
    if best.probability_best < WIN_PROBABILITY:
        return None
    test.winner = best.key
    test.ended_at = now or utcnow()
    session.add(test)
    return best.key


async def get_test(session: AsyncSession, shop: Shop, test_id: int) -> AbTest | None:
    query = select(AbTest).where(AbTest.shop_id == shop.id, AbTest.id == test_id)
    return (await session.exec(query)).first()


async def list_tests(session: AsyncSession, shop: Shop) -> Sequence[AbTest]:
    """The shop's tests, the latest first."""
    query = (
        select(AbTest)
        .where(AbTest.shop_id == shop.id)
        .order_by(col(AbTest.started_at).desc(), col(AbTest.id).desc())
    )
    return (await session.exec(query)).all()


async def stop_test(session: AsyncSession, test: AbTest, *, now: datetime | None = None) -> AbTest:
    """End a test without a winner: from then on the step sends as it did before the test."""
    if test.ended_at is None:
        test.ended_at = now or utcnow()
        session.add(test)
    return test


async def start_test(
    session: AsyncSession,
    shop: Shop,
    flow: str,
    step_key: str,
    variants: list[dict[str, Any]],
    holdout: float,
    min_recipients: int,
    *,
    now: datetime | None = None,
) -> AbTest:
    """Start a test on a step of one of the shop's flows. Raises AbTestError, changing nothing,
    when the step is unknown, the variants are not 2–4 with distinct keys and weights above
    zero, a variant would make an invalid step, the holdout is outside 0–0.5, or a test already
    runs on the step."""
    assert shop.id is not None
    if flow not in FLOW_NAMES:
        raise AbTestError(f"unknown flow {flow!r}")
    stored = await flows_repository.get_flow(session, shop.id, flow)
    steps = stored.steps if stored else []
    spec = next((s for i, s in enumerate(steps) if key_of_step(s, i) == step_key), None)
    if spec is None:
        raise AbTestError(f"step_key {step_key!r} is not a step of {flow}")
    if spec.get("action"):
        raise AbTestError(f"step_key {step_key!r} of {flow} sends no email")
    _check_variants(flow, spec, variants)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float):
        raise AbTestError("holdout must be a share from 0 to 0.5")
    if not 0 <= holdout <= MAX_HOLDOUT:
        raise AbTestError(f"holdout must be from 0 to {MAX_HOLDOUT}, not {holdout}")
    if isinstance(min_recipients, bool) or not isinstance(min_recipients, int):
        raise AbTestError("min_recipients must be a whole number")
    if min_recipients < 1:
        raise AbTestError("min_recipients must be at least 1")
    if await repository.running_test(session, shop.id, flow, step_key) is not None:
        raise AbTestError(f"a test already runs on step_key {step_key!r} of {flow}")
    test = AbTest(
        shop_id=shop.id,
        flow=flow,
        step_key=step_key,
        variants=[{**v, "weight": v.get("weight", 1)} for v in variants],
        holdout=float(holdout),
        min_recipients=min_recipients,
        started_at=now or utcnow(),
    )
    session.add(test)
    try:
        # No savepoint: pysqlite would make its release a commit. The caller rolls back.
        await session.flush()
    except IntegrityError:  # another admin started one on this step a moment ago
        raise AbTestError(f"a test already runs on step_key {step_key!r} of {flow}") from None
    return test


def _check_variants(flow: str, spec: dict[str, Any], variants: list[dict[str, Any]]) -> None:
    if not isinstance(variants, list) or not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        raise AbTestError(f"a test needs {MIN_VARIANTS} to {MAX_VARIANTS} variants")
    keys = []
    for variant in variants:
        key = variant.get("key") if isinstance(variant, dict) else None
        if not isinstance(key, str) or not key.isidentifier() or len(key) > 64:
            raise AbTestError("each variant needs a key: a short name of letters, digits and _")
        if key == HOLDOUT:
            raise AbTestError(f"{HOLDOUT!r} names the holdout, not a variant")
        weight = variant.get("weight", 1)  # as a step's own variants default
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not 0 < weight < math.inf
        ):
            raise AbTestError(f"variant {key!r} needs a weight above zero")
        try:
            validate_steps(flow, [_merged(spec, variant)])
        except FlowDefinitionError as exc:
            raise AbTestError(f"variant {key!r}: {exc}") from None
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise AbTestError("two variants have the same key")
