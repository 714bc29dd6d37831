"""Shopify's side of the catalog: current variant data through the Admin API, and cart
permalinks for checkouts that carry no recovery URL."""

import logging
from urllib.parse import quote, urlsplit

from app.commerce.catalog import GONE, VariantDetails
from app.commerce.offers import DiscountCode
from app.db import utcnow
from app.shops.models import Shop
from integrations.shopify import admin, tokens

log = logging.getLogger("rebound.shopify")


async def variant_details(
    shop: Shop, refs: dict[str, str | None]
) -> dict[str, VariantDetails] | None:
    """Details of the variants the store still has; None when the store cannot be asked, so an
    email goes out with what the checkout said rather than not at all."""
    if not shop.access_token_encrypted:
        return None
    try:
        found = await tokens.with_admin_token(
            shop, lambda token: admin.fetch_variants(shop.domain, token, list(refs))
        )
    except admin.ShopifyTokenRevoked:
        _mark_token_invalid(shop)
        return None
    except admin.ShopifyApiError as exc:
        log.warning("product data for %s unavailable: %s", shop.domain, type(exc).__name__)
        return None
    details = {
        variant_id: VariantDetails(
            price=info.price,
            available=info.available_for_sale,
            image_url=info.image_url,
            image_alt=info.image_alt,
            product_url=info.product_url,
        )
        for variant_id, info in found.items()
    }
    # nodes(ids:) answers null for a variant that was deleted: Shopify says it is gone.
    return {variant_id: details.get(variant_id, GONE) for variant_id in refs}


def cart_permalink(shop: Shop, lines: list[tuple[str, int]]) -> str | None:
    """Shopify's cart permalink, /cart/VARIANT:QTY,…, which refills the cart on the storefront."""
    items = ",".join(f"{variant_id}:{quantity}" for variant_id, quantity in lines if quantity > 0)
    return f"https://{shop.domain}/cart/{items}" if items else None


async def create_discount(shop: Shop, discount: DiscountCode, email: str | None) -> str | None:
    """Create the single-use code in the store; None (with the reason logged) when it cannot."""
    if not shop.access_token_encrypted:
        return "the store is not connected with an access token"
    try:
        await tokens.with_admin_token(
            shop,
            lambda token: admin.create_discount_code(
                shop.domain,
                token,
                code=discount.code,
                title=f"Rebound {discount.code}",
                kind=discount.offer.kind,
                value=discount.offer.value,
                currency=shop.currency or "USD",
                minimum_subtotal=discount.offer.minimum_subtotal,
                ends_at=discount.ends_at,
                customer_email=email,
            ),
        )
    except admin.ShopifyTokenRevoked:
        _mark_token_invalid(shop)
        return "the store's access token was revoked; reconnect the store"
    except admin.ShopifyApiError as exc:
        return f"Shopify refused the discount: {exc}"
    return None


async def apply_discount(shop: Shop, checkout_token: str, url: str, code: str) -> str:
    """Shopify's shareable discount link: /discount/CODE?redirect=PATH applies the code, then
    goes on to PATH on the same storefront (here the checkout's recovery page)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{parts.scheme}://{parts.netloc}/discount/{quote(code)}?redirect={quote(path, safe='')}"


def _mark_token_invalid(shop: Shop) -> None:
    # The shop row belongs to the caller's session: the mark is saved with the step's commit.
    if shop.token_invalid_at is None:
        shop.token_invalid_at = utcnow()
        log.warning("Shopify says the access token of %s is no longer valid", shop.domain)
