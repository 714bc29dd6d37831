"""Deleting old inbox entries. A delivery's raw payload holds the customer's personal data
(names, addresses, what they bought); once it has been processed, the domain tables hold what
Rebound needs, and the payload is kept only so long as it may be worth a look or a replay.

Deleting an entry breaks nothing that reads the inbox: no table refers to an entry's id, a
customer redaction scrubs only entries still there, and the analytics read sends and orders.
It does lift the entry's dedupe on (shop_id, delivery_id): a delivery that came again after
its entry was deleted would be stored and processed again. Platforms do not send one that
late: Shopify retries a delivery for at most 48 hours (only one not answered 2xx, or whose
answer was lost), WooCommerce for less. Only a retention of a day could meet such a retry; the
default 30 days cannot."""

from collections.abc import Callable
from datetime import datetime, timedelta

from app.db import sessionmaker
from app.inbox import repository
from app.inbox.models import InboxStatus
from app.settings import Settings, get_settings
from app.shops import repository as shops

# Rows per DELETE, each its own transaction: short enough that the writer's INSERTs (the
# webhook receivers) never queue long behind one on SQLite's single writer lock.
BATCH_SIZE = 5000

Progress = Callable[[int], None]


def cutoffs(settings: Settings, now: datetime) -> dict[InboxStatus, datetime]:
    """Per status, entries received before this go. `received` ones (not processed yet, or
    being processed) are never deleted: they are work still to do."""
    return {
        InboxStatus.HANDLED: now - timedelta(days=settings.inbox_keep_days),
        # Kept longer: a failed delivery is the one a merchant may want to replay.
        InboxStatus.FAILED: now - timedelta(days=settings.inbox_keep_failed_days),
    }


async def purge(
    now: datetime,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> dict[InboxStatus, int]:
    """Delete every shop's entries past their retention (INBOX_KEEP_DAYS, INBOX_KEEP_FAILED_DAYS);
    how many per status. With `dry_run`, only count them. `progress` hears the running total
    after each batch."""
    async with sessionmaker()() as session:
        shop_ids = [shop.id for shop in await shops.list_all(session) if shop.id is not None]
    rules = cutoffs(get_settings(), now)
    counted = dict.fromkeys(rules, 0)
    done = 0

    def batch_deleted(rows: int) -> None:
        nonlocal done
        done += rows
        if progress is not None:
            progress(done)

    for shop_id in shop_ids:
        for status, before in rules.items():
            if dry_run:
                counted[status] += await _count(shop_id, status, before)
            else:
                counted[status] += await _delete(shop_id, status, before, batch_size, batch_deleted)
    return counted


async def _count(shop_id: int, status: InboxStatus, before: datetime) -> int:
    async with sessionmaker()() as session:
        return await repository.count_older(session, shop_id, status, before)


async def _delete(
    shop_id: int, status: InboxStatus, before: datetime, batch_size: int, batch_deleted: Progress
) -> int:
    """One shop's entries of one status, a batch per transaction until none is left."""
    total = 0
    async with sessionmaker()() as session:
        while True:
            gone = await repository.delete_older(session, shop_id, status, before, batch_size)
            await session.commit()
            total += gone
            if gone:
                batch_deleted(gone)
            if gone < batch_size:
                return total
