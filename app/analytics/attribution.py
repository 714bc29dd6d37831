"""Each order credited to the Rebound email it came from. Never commits; the caller does.

Attribution rules (decided once per order, when it arrives):
1. The order's own cart. When its checkout token or cart token is that of an abandoned-cart
   enrollment that sent an email within the shop's `attribution_days` before the order, the
   order came from that cart: that enrollment's email clicked last in the window settles it,
   else its last email sent, click or no click.
2. Otherwise the last click. Of the shop's sent emails to the order's address, the one with the
   latest click within `attribution_days` before the order was placed. The restore link records
   its click like any tracked link, so it counts the same.
3. Otherwise the order is not Rebound's.

Revenue is not stored with the decision: it is read at query time (total less refunds, in the
shop's currency only; see app/analytics/repository.py), so a later refund or cancellation
subtracts from the figures at once.
"""

from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from app.analytics import repository
from app.analytics.models import Attribution
from app.commerce.models import Order
from app.shops import repository as shops


async def attribute(session: AsyncSession, order: Order) -> None:
    """Credit `order` to the Rebound email it came from, if any. Idempotent: the first decision
    stands, so a repeated delivery of the order changes nothing."""
    shop = await shops.get(session, order.shop_id)
    if shop is None or order.id is None:
        return
    since = order.placed_at - timedelta(days=shop.attribution_days)
    via, found = "cart", None
    if order.checkout_token or order.cart_token:
        found = await repository.cart_send(
            session,
            order.shop_id,
            checkout_token=order.checkout_token,
            cart_token=order.cart_token,
            since=since,
            until=order.placed_at,
        )
    if found is None and order.email:
        via = "click"
        found = await repository.last_clicked_send(
            session, order.shop_id, order.email, since=since, until=order.placed_at
        )
    if found is None:
        return
    send, flow = found
    assert send.id is not None
    await repository.insert_attribution(
        session,
        Attribution(
            shop_id=order.shop_id,
            order_id=order.id,
            send_id=send.id,
            flow=flow,
            step=send.step,
            variant=send.variant,
            via=via,
            attributed_at=order.placed_at,
        ),
    )
