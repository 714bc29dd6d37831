"""WooCommerce's side of the catalog: current product data and single-use coupons."""

import logging
from collections import defaultdict
from urllib.parse import urlencode

import httpx

from app.commerce.catalog import VariantDetails
from app.commerce.offers import DiscountCode
from app.db import utcnow
from app.shops.models import Shop
from app.shops.service import ShopError
from integrations.woocommerce import api
from integrations.woocommerce.connect import credentials

log = logging.getLogger("rebound.woocommerce")


async def variant_details(
    shop: Shop, refs: dict[str, str | None]
) -> dict[str, VariantDetails] | None:
    """Simple products in batches of 100, variations per parent product; None when the store
    cannot be asked. A line item's variant id is its variation's when it has one."""
    try:
        found = await _fetch(credentials(shop), refs)
    except api.WooCommerceUnauthorized:
        _mark_keys_invalid(shop)
        return None
    except (api.WooCommerceApiError, ShopError, httpx.HTTPError) as exc:
        log.warning("product data for %s unavailable: %s", shop.domain, exc)
        return None
    return {
        product_id: VariantDetails(
            price=info.price,
            available=info.available,
            image_url=info.image_url,
            image_alt=info.image_alt,
            product_url=info.permalink,
        )
        for product_id, info in found.items()
        if info.price is not None  # no price: not purchasable, shown as the checkout had it
    }


async def create_discount(shop: Shop, discount: DiscountCode, email: str | None) -> str | None:
    """A single-use coupon restricted to the shopper's email, expiring with the offer."""
    try:
        await api.create_coupon(
            credentials(shop),
            code=discount.code,
            kind=discount.offer.kind,
            amount=discount.offer.value,
            email=email,
            expires_at=discount.ends_at,
            minimum_amount=discount.offer.minimum_subtotal,
        )
    except api.WooCommerceUnauthorized:
        _mark_keys_invalid(shop)
        return "the store's API keys were revoked; connect the store again"
    except (api.WooCommerceApiError, ShopError) as exc:
        return f"WooCommerce refused the coupon: {exc}"
    except httpx.HTTPError as exc:
        return f"the store could not be reached: {type(exc).__name__}"
    return None


async def _fetch(
    store: api.StoreCredentials, refs: dict[str, str | None]
) -> dict[str, api.ProductInfo]:
    products = [variant for variant, product in refs.items() if product in (None, variant)]
    variations: dict[str, list[str]] = defaultdict(list)
    for variant, product in refs.items():
        if product not in (None, variant):
            variations[str(product)].append(variant)
    found = await api.fetch_products(store, products) if products else {}
    for product, ids in variations.items():
        found |= await api.fetch_variations(store, product, ids)
    return found


async def apply_discount(shop: Shop, checkout_token: str, url: str, code: str) -> str:
    """The order-pay page has no coupon field: the coupon is put on the pending order itself
    before the shopper lands there. A cart rebuilt from a draft (no order to pay) keeps the
    code in the email for the shopper to type. The link works whatever the store answers."""
    order_id = checkout_token.removeprefix("order-")
    # Any link but a rebuilt cart is the order-pay page, pretty (/order-pay/727/) or, with plain
    # permalinks, ?page_id=7&order-pay=727; apply_coupon checks the order still awaits payment.
    if not order_id.isdigit() or "add-to-cart=" in url:
        return url
    try:
        await api.apply_coupon(credentials(shop), order_id, code)
    except api.WooCommerceUnauthorized:
        _mark_keys_invalid(shop)
    except (api.WooCommerceApiError, ShopError, httpx.HTTPError) as exc:
        log.warning("coupon not applied to order %s of %s: %s", order_id, shop.domain, exc)
    return url


def cart_permalink(shop: Shop, lines: list[tuple[str, int]]) -> str | None:
    """Core WooCommerce adds one product to the cart by URL: the first line, on the cart page."""
    if not lines or not shop.base_url:
        return None
    variant_id, quantity = lines[0]
    query = urlencode({"add-to-cart": variant_id, "quantity": max(quantity, 1)})
    return f"{shop.base_url.rstrip('/')}/cart/?{query}"


def _mark_keys_invalid(shop: Shop) -> None:
    if shop.token_invalid_at is None:
        shop.token_invalid_at = utcnow()
        log.warning("WooCommerce says the API keys of %s are no longer valid", shop.domain)
