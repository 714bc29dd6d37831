"""WooCommerce's side of the catalog: current product data and single-use coupons."""

import logging

import httpx

from app.commerce.catalog import VariantDetails
from app.commerce.offers import DiscountCode
from app.db import utcnow
from app.shops.models import Shop
from app.shops.service import ShopError
from integrations.woocommerce import api
from integrations.woocommerce.connect import credentials

log = logging.getLogger("rebound.woocommerce")


async def variant_details(shop: Shop, variant_ids: list[str]) -> dict[str, VariantDetails] | None:
    """Products by id, in batches of 100; None when the store cannot be asked. A line item's id
    is its variation's when it has one; variations not found as products keep checkout data."""
    try:
        found = await api.fetch_products(credentials(shop), variant_ids)
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


def _mark_keys_invalid(shop: Shop) -> None:
    if shop.token_invalid_at is None:
        shop.token_invalid_at = utcnow()
        log.warning("WooCommerce says the API keys of %s are no longer valid", shop.domain)
