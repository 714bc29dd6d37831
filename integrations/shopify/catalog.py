"""Shopify's side of the catalog: current variant data through the Admin API, and cart
permalinks for checkouts that carry no recovery URL."""

import logging

from app import security
from app.commerce.catalog import VariantDetails
from app.shops.models import Shop
from integrations.shopify import admin

log = logging.getLogger("rebound.shopify")


async def variant_details(shop: Shop, variant_ids: list[str]) -> dict[str, VariantDetails] | None:
    """Details of the variants the store still has; None when the store cannot be asked, so an
    email goes out with what the checkout said rather than not at all."""
    if not shop.access_token_encrypted:
        return None
    token = security.decrypt(shop.access_token_encrypted)
    try:
        found = await admin.fetch_variants(shop.domain, token, variant_ids)
    except admin.ShopifyApiError as exc:
        log.warning("product data for %s unavailable: %s", shop.domain, type(exc).__name__)
        return None
    return {
        variant_id: VariantDetails(
            price=info.price,
            available=info.available_for_sale,
            image_url=info.image_url,
            image_alt=info.image_alt,
            product_url=info.product_url,
        )
        for variant_id, info in found.items()
    }


def cart_permalink(shop: Shop, lines: list[tuple[str, int]]) -> str | None:
    """Shopify's cart permalink, /cart/VARIANT:QTY,…, which refills the cart on the storefront."""
    items = ",".join(f"{variant_id}:{quantity}" for variant_id, quantity in lines if quantity > 0)
    return f"https://{shop.domain}/cart/{items}" if items else None
