"""Privacy law: a customer's data exported on request or erased, a shop's data deleted."""

import asyncio
import json
import logging
import shutil
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.events import Customer
from app.commerce.repository import normalize_email
from app.mail.transport import OutboxTransport
from app.privacy import repository
from app.privacy.models import DataRequest
from app.settings import get_settings
from app.shops import service as shops_service
from app.shops.models import Shop

log = logging.getLogger("rebound.privacy")


async def export_customer(session: AsyncSession, shop: Shop, customer: Customer) -> dict[str, Any]:
    """Everything Rebound holds about one customer of one shop."""
    assert shop.id is not None
    checkouts = await repository.checkouts(session, shop.id, customer)
    orders = await repository.orders(session, shop.id, customer)
    enrollments = await repository.enrollments(
        session,
        shop.id,
        [c.id for c in checkouts if c.id is not None],
        [o.id for o in orders if o.id is not None],
        normalize_email(customer.email),
    )
    sends = await repository.sends(session, shop.id, [e.id for e in enrollments if e.id])
    unsubscribe = await repository.unsubscribe(session, shop.id, customer.email)
    suppression = await repository.suppression(session, shop.id, customer.email)
    return {
        "shop": shop.domain,
        "customer": {"email": customer.email, "phone": customer.phone, "id": customer.platform_id},
        "checkouts": [
            {
                "token": c.token,
                "email": c.email,
                "first_name": c.first_name,
                "last_name": c.last_name,
                "phone": c.phone,
                "currency": c.currency,
                "total_price": c.total_price,
                "line_items": c.line_items,
                "started_at": c.started_at.isoformat(),
                "completed_at": c.completed_at.isoformat() if c.completed_at else None,
            }
            for c in checkouts
        ],
        "orders": [
            {
                "name": o.name,
                "id": o.platform_id,
                "first_name": o.first_name,
                "total_price": o.total_price,
                "currency": o.currency,
            }
            for o in orders
        ],
        "emails": [
            {"flow": e.flow, "status": e.status, "exit_reason": e.exit_reason} for e in enrollments
        ],
        "messages_sent": [
            {"step": s.step + 1, "status": s.status, "sent_at": s.sent_at and s.sent_at.isoformat()}
            for s in sends
        ],
        "link_clicks": await repository.click_count(
            session, shop.id, [s.id for s in sends if s.id]
        ),
        "unsubscribed_at": unsubscribe.created_at.isoformat() if unsubscribe else None,
        "suppressed": (
            {"reason": suppression.reason, "at": suppression.created_at.isoformat()}
            if suppression
            else None
        ),
        "webhook_deliveries_mentioning_them": await repository.inbox_mentions(
            session, shop.id, customer
        ),
    }


async def record_data_request(
    session: AsyncSession, shop: Shop, customer: Customer, request_id: str | None
) -> DataRequest:
    assert shop.id is not None
    export = await export_customer(session, shop, customer)
    request = DataRequest(
        shop_id=shop.id,
        platform_request_id=request_id,
        customer_email=normalize_email(customer.email),
        export=json.dumps(export, indent=2),
    )
    session.add(request)
    await session.flush()
    # The log says that a request came and where its export is, never what it holds.
    log.info(
        "data request %s for shop %s: export kept as data request %s",
        request_id,
        shop.domain,
        request.id,
    )
    return request


async def redact_customer(session: AsyncSession, shop: Shop, customer: Customer) -> None:
    assert shop.id is not None
    await repository.redact_customer(session, shop.id, customer)
    await asyncio.to_thread(_erase_outbox_messages, shop, customer)
    log.info("redacted a customer of shop %s", shop.domain)


async def redact_shop(session: AsyncSession, shop: Shop) -> None:
    assert shop.id is not None
    await repository.delete_shop(session, shop.id)
    shops_service.forget_signers()
    folder = OutboxTransport(get_settings().outbox_dir).shop_folder(shop.domain)
    await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
    log.info("deleted every record of shop %s", shop.domain)


def _erase_outbox_messages(shop: Shop, customer: Customer) -> None:
    needles = [value.lower().encode() for value in (customer.email, customer.phone) if value]
    folder = OutboxTransport(get_settings().outbox_dir).shop_folder(shop.domain)
    for path in folder.glob("*.eml") if folder.exists() else []:
        content = path.read_bytes().lower()
        if any(needle in content for needle in needles):
            path.unlink()


# A checkpoint waits for readers of older snapshots (a worker mid-query) to finish; it is tried
# again for this long before the erased bytes are left to the next checkpoint.
CHECKPOINT_TRIES, CHECKPOINT_PAUSE = 50, 0.1


async def purge_erased_bytes(session: AsyncSession) -> None:
    """After an erasure commits: SQLite's WAL still holds old page images until it is
    checkpointed and truncated (secure_delete already zeroes freed pages)."""
    if session.get_bind().dialect.name != "sqlite":
        return
    for _ in range(CHECKPOINT_TRIES):
        checkpoint = text("PRAGMA wal_checkpoint(TRUNCATE)")
        busy = (await session.exec(checkpoint)).first()  # type: ignore[call-overload]
        if busy is not None and busy[0] == 0:
            return
        await asyncio.sleep(CHECKPOINT_PAUSE)
    log.warning("the WAL could not be truncated: erased bytes stay in it until the next checkpoint")
