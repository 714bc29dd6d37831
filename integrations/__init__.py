"""Platform integrations. Each turns its platform's webhooks into domain events; a new platform is
one new folder and one line here."""

from collections.abc import Awaitable, Callable
from typing import Any

from app.commerce import catalog
from app.commerce.catalog import VariantDetails
from app.commerce.events import Event, InvalidPayload
from app.commerce.offers import DiscountCode
from app.shops.models import Shop
from integrations.shopify import catalog as shopify_catalog
from integrations.shopify import webhooks as shopify_webhooks
from integrations.woocommerce import catalog as woocommerce_catalog
from integrations.woocommerce import webhooks as woocommerce_webhooks

_EVENTS: dict[str, Callable[[str, Any], list[Event]]] = {
    shopify_webhooks.PLATFORM: shopify_webhooks.events,
    woocommerce_webhooks.PLATFORM: woocommerce_webhooks.events,
}


def events(platform: str, topic: str, payload: Any) -> list[Event]:
    try:
        to_events = _EVENTS[platform]
    except KeyError:
        raise InvalidPayload(f"no integration for platform {platform!r}") from None
    return to_events(topic, payload)


# Variant id -> its product's id (None when unknown): some platforms look variants up by product.
VariantRefs = dict[str, str | None]
VariantLookup = Callable[[Shop, VariantRefs], Awaitable[dict[str, VariantDetails] | None]]
_VARIANTS: dict[str, VariantLookup] = {
    shopify_webhooks.PLATFORM: shopify_catalog.variant_details,
    woocommerce_webhooks.PLATFORM: woocommerce_catalog.variant_details,
}
_PERMALINKS: dict[str, Callable[[Shop, list[tuple[str, int]]], str | None]] = {
    shopify_webhooks.PLATFORM: shopify_catalog.cart_permalink,
    woocommerce_webhooks.PLATFORM: woocommerce_catalog.cart_permalink,
}


async def variant_details(shop: Shop, refs: VariantRefs) -> dict[str, VariantDetails]:
    """Current details of these variants, from the cache or the shop's platform."""
    assert shop.id is not None
    known, missing = catalog.cached(shop.id, list(refs))
    lookup = _VARIANTS.get(shop.platform)
    wanted = {variant: refs[variant] for variant in missing}
    found = await lookup(shop, wanted) if wanted and lookup is not None else None
    if found is not None:  # None: the store could not be asked; ask again next time
        catalog.remember(shop.id, found)
        known.update(found)
    return known


def cart_permalink(shop: Shop, lines: list[tuple[str, int]]) -> str | None:
    """A link that refills this cart on the shop's storefront, where the platform has one."""
    make = _PERMALINKS.get(shop.platform)
    return make(shop, lines) if make else None


_DISCOUNTS: dict[str, Callable[[Shop, DiscountCode, str | None], Awaitable[str | None]]] = {
    shopify_webhooks.PLATFORM: shopify_catalog.create_discount,
    woocommerce_webhooks.PLATFORM: woocommerce_catalog.create_discount,
}
DiscountApplier = Callable[[Shop, str, str, str], Awaitable[str]]
_APPLY_DISCOUNT: dict[str, DiscountApplier] = {
    shopify_webhooks.PLATFORM: shopify_catalog.apply_discount,
    woocommerce_webhooks.PLATFORM: woocommerce_catalog.apply_discount,
}


async def create_discount(shop: Shop, discount: DiscountCode, email: str | None) -> str | None:
    """Make the code in the store. None when made; otherwise why it was not (then the email
    goes out without an offer, and the reason is kept)."""
    create = _DISCOUNTS.get(shop.platform)
    if create is None:
        return f"{shop.platform} stores have no discount codes in Rebound yet"
    return await create(shop, discount, email)


async def apply_discount(shop: Shop, checkout_token: str, url: str, code: str) -> str:
    """Where the shopper goes so that the code is applied on the way to `url` (the platform may
    apply it to the checkout itself first)."""
    apply = _APPLY_DISCOUNT.get(shop.platform)
    return await apply(shop, checkout_token, url, code) if apply else url
