"""Inbox retention: old processed and failed deliveries are deleted, unprocessed ones never."""

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlmodel import col, select

from app.db import sessionmaker, utcnow
from app.inbox import retention
from app.inbox.models import InboxEntry, InboxStatus
from app.inbox.tasks import purge_inbox
from app.settings import Settings, get_settings
from app.shops.models import Shop
from app.shops.service import connect_shopify
from app.worker import make_worker
from tests.test_cli import rebound

NOW = utcnow()


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


async def store(shop: Shop, status: InboxStatus, received_at: datetime, count: int = 1) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        first = len((await session.exec(select(InboxEntry.id))).all())
        for number in range(first, first + count):
            session.add(
                InboxEntry(
                    shop_id=shop.id,
                    platform="shopify",
                    topic="checkouts/update",
                    delivery_id=f"d{number}",
                    payload='{"email": "jane@example.com"}',
                    status=status,
                    received_at=received_at,
                )
            )
        await session.commit()


async def kept(shop: Shop | None = None) -> list[tuple[InboxStatus, int]]:
    """(status, age in whole days) of every entry left, of one shop or all."""
    async with sessionmaker()() as session:
        query = select(InboxEntry).order_by(col(InboxEntry.id))
        if shop is not None:
            query = query.where(InboxEntry.shop_id == shop.id)
        entries = (await session.exec(query)).all()
    return [(entry.status, (NOW - entry.received_at).days) for entry in entries]


@pytest.fixture
def keep_days() -> Iterator[None]:
    """The defaults, whatever the environment says."""
    settings = get_settings()
    before = settings.inbox_keep_days, settings.inbox_keep_failed_days
    settings.inbox_keep_days, settings.inbox_keep_failed_days = 30, 90
    yield
    settings.inbox_keep_days, settings.inbox_keep_failed_days = before


@pytest.fixture
async def other_shop() -> Shop:
    async with sessionmaker()() as session:
        created = await connect_shopify(
            session, domain="other.myshopify.com", access_token="shpat_x", api_secret="s"
        )
        await session.commit()
        return created


async def test_processed_entries_go_after_their_days_failed_ones_later_pending_never(
    shop: Shop, keep_days: None
) -> None:
    await store(shop, InboxStatus.HANDLED, days_ago(31))
    await store(shop, InboxStatus.HANDLED, days_ago(29))
    await store(shop, InboxStatus.FAILED, days_ago(91))
    await store(shop, InboxStatus.FAILED, days_ago(31))
    await store(shop, InboxStatus.RECEIVED, days_ago(400))

    deleted = await retention.purge(NOW)

    assert deleted == {InboxStatus.HANDLED: 1, InboxStatus.FAILED: 1}
    assert await kept() == [
        (InboxStatus.HANDLED, 29),
        (InboxStatus.FAILED, 31),  # still within its 90 days: it can be replayed
        (InboxStatus.RECEIVED, 400),  # not processed yet: work to do, never deleted
    ]


async def test_every_shop_is_purged_by_its_own_entries(
    shop: Shop, other_shop: Shop, keep_days: None
) -> None:
    await store(shop, InboxStatus.HANDLED, days_ago(31))
    await store(other_shop, InboxStatus.HANDLED, days_ago(31))
    await store(other_shop, InboxStatus.HANDLED, days_ago(1))

    deleted = await retention.purge(NOW)

    assert deleted[InboxStatus.HANDLED] == 2
    assert await kept(shop) == []
    assert await kept(other_shop) == [(InboxStatus.HANDLED, 1)]


async def test_a_large_purge_deletes_in_batches_and_reports_progress(
    shop: Shop, keep_days: None
) -> None:
    await store(shop, InboxStatus.HANDLED, days_ago(40), count=7)
    await store(shop, InboxStatus.FAILED, days_ago(100), count=2)
    await store(shop, InboxStatus.HANDLED, days_ago(2), count=2)
    said: list[int] = []

    deleted = await retention.purge(NOW, batch_size=3, progress=said.append)

    assert deleted == {InboxStatus.HANDLED: 7, InboxStatus.FAILED: 2}
    assert said == [3, 6, 7, 9]  # the running total after each batch
    assert await kept() == [(InboxStatus.HANDLED, 2)] * 2


async def test_a_dry_run_counts_and_deletes_nothing(shop: Shop, keep_days: None) -> None:
    await store(shop, InboxStatus.HANDLED, days_ago(31), count=3)
    await store(shop, InboxStatus.FAILED, days_ago(91))

    counted = await retention.purge(NOW, dry_run=True)

    assert counted == {InboxStatus.HANDLED: 3, InboxStatus.FAILED: 1}
    assert len(await kept()) == 4


async def test_the_retention_follows_the_settings(shop: Shop, keep_days: None) -> None:
    get_settings().inbox_keep_days, get_settings().inbox_keep_failed_days = 7, 14
    await store(shop, InboxStatus.HANDLED, days_ago(8))
    await store(shop, InboxStatus.FAILED, days_ago(13))

    deleted = await retention.purge(NOW)

    assert deleted == {InboxStatus.HANDLED: 1, InboxStatus.FAILED: 0}


@pytest.mark.parametrize("name", ["INBOX_KEEP_DAYS", "INBOX_KEEP_FAILED_DAYS"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_retention_of_less_than_a_day_is_refused(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=f"{name} is a number of days, 1 or more"):
        Settings()


async def test_the_purge_command_reports_and_its_dry_run_changes_nothing(
    shop: Shop, keep_days: None
) -> None:
    await store(shop, InboxStatus.HANDLED, days_ago(31), count=2)
    await store(shop, InboxStatus.FAILED, days_ago(91))
    await store(shop, InboxStatus.RECEIVED, days_ago(91))
    defaults = {"INBOX_KEEP_DAYS": "30", "INBOX_KEEP_FAILED_DAYS": "90"}

    code, looked = await rebound("inbox", "purge", "--dry-run", env=defaults)
    assert code == 0, looked
    assert "would delete 3 inbox entries: 2 processed over 30 days old, 1 failed" in looked
    assert len(await kept()) == 4

    code, purged = await rebound("inbox", "purge", env=defaults)
    assert code == 0, purged
    assert "… 3 deleted so far" in purged
    assert "deleted 3 inbox entries: 2 processed over 30 days old, 1 failed" in purged
    assert await kept() == [(InboxStatus.RECEIVED, 91)]


async def test_the_worker_purges_daily(shop: Shop, keep_days: None) -> None:
    await store(shop, InboxStatus.HANDLED, days_ago(31))
    await store(shop, InboxStatus.FAILED, days_ago(91), count=2)
    crons = {job.name: job for job in make_worker().cron_jobs}

    said = await purge_inbox({})

    assert said == "1 processed and 2 failed inbox entries deleted"
    assert crons["cron:purge_inbox"].unique and crons["cron:purge_inbox"].hour == 3
