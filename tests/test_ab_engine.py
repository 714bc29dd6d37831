"""An A/B test running in the flow engine: each customer gets their variant's words every time,
the holdout gets nothing and is kept as such, and an order by a recipient is attributed to the
email and its variant."""

from collections import Counter
from datetime import timedelta

from sqlmodel import select

from app.analytics import abtests
from app.analytics.models import Assignment, Attribution
from app.db import sessionmaker
from app.mail.transport import SmtpTransport
from app.shops.models import Shop
from flows.models import Send, SendStatus
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import Mailbox
from tests.test_flows import SWEATER, apply, checkout, now, only, open_shop, order, run

CUSTOMERS = [f"c{n}@example.com" for n in range(40)]


async def start(shop: Shop) -> int:
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        test = await abtests.start_test(
            session, stored, "abandoned_cart", "reminder",
            [{"key": "warm", "overrides": {"en": {"subject": "Warm: your cart"}}},
             {"key": "short", "overrides": {"en": {"subject": "Short: your cart"}}}],
            holdout=0.25, min_recipients=10,
        )  # fmt: skip
        await session.commit()
        assert test.id is not None
        return test.id


async def test_variants_holdout_and_attribution_through_the_engine(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    test_id = await start(shop)
    for number, email in enumerate(CUSTOMERS):
        await apply(shop, checkout(f"ab{number}", email))
    transport = SmtpTransport(smtp_url)
    outcomes = Counter()
    for email in CUSTOMERS:
        outcomes[await run(await only("abandoned_cart", email), 0, transport)] += 1

    async with sessionmaker()() as session:
        sends = (await session.exec(select(Send).where(Send.step == 0))).all()
        assigned = {
            a.email: a.variant
            for a in (await session.exec(select(Assignment))).all()
            if a.test_id == test_id
        }
    by_email = {s.email: s for s in sends}
    assert set(assigned) == set(CUSTOMERS)  # every customer counted, the holdout too
    holdout = [e for e, v in assigned.items() if v == abtests.HOLDOUT]
    # The split itself is tested over many customers in test_analytics; here: some of each.
    assert 0 < len(holdout) < len(CUSTOMERS)
    assert outcomes["skipped: A/B holdout"] == len(holdout)
    for email in holdout:
        assert by_email[email].status == SendStatus.SKIPPED
        assert by_email[email].variant == abtests.HOLDOUT
        assert not [m for m in mailbox.messages if m["To"] == email]
    for email, variant in assigned.items():
        if variant == abtests.HOLDOUT:
            continue
        (message,) = [m for m in mailbox.messages if m["To"] == email]
        assert message["Subject"].startswith("Warm:" if variant == "warm" else "Short:")
        assert by_email[email].variant == variant and by_email[email].status == SendStatus.SENT

    # A recipient who clicked and bought: the order is the email's, and its variant's.
    buyer = next(e for e, v in assigned.items() if v != abtests.HOLDOUT)
    async with sessionmaker()() as session:
        from flows import repository

        send = by_email[buyer]
        repository.add_click(session, send)
        await session.commit()
    await apply(shop, order("ab-1", buyer, [SWEATER], placed_at=now() + timedelta(seconds=1)))
    async with sessionmaker()() as session:
        (credited,) = (await session.exec(select(Attribution))).all()
    assert credited.send_id == by_email[buyer].id and credited.variant == assigned[buyer]
