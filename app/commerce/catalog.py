"""What the store says about the cart's items right now: image, price, availability. Looked up
through the shop's platform, cached briefly per shop so a burst of emails costs one request."""

import time
from dataclasses import dataclass
from decimal import Decimal

CACHE_SECONDS = 300


@dataclass(frozen=True)
class VariantDetails:
    price: Decimal  # in the shop's currency
    available: bool
    image_url: str | None
    image_alt: str | None
    product_url: str | None
    gone: bool = False  # the store no longer has this variant at all


GONE = VariantDetails(
    price=Decimal(0), available=False, image_url=None, image_alt=None, product_url=None, gone=True
)


_cache: dict[tuple[int, str], tuple[float, VariantDetails]] = {}


def cached(shop_id: int, variant_ids: list[str]) -> tuple[dict[str, VariantDetails], list[str]]:
    """What the cache knows, and the ids it does not (or no longer) know."""
    now = time.monotonic()
    known: dict[str, VariantDetails] = {}
    missing: list[str] = []
    for variant_id in variant_ids:
        hit = _cache.get((shop_id, variant_id))
        if hit is None or hit[0] < now:
            missing.append(variant_id)
        else:
            known[variant_id] = hit[1]
    return known, missing


def remember(shop_id: int, found: dict[str, VariantDetails]) -> None:
    """Keep what the store said, GONE included. An id it did not speak of stays unknown and
    is asked about again: only the platform can tell a deleted item from one it cannot look up."""
    expires = time.monotonic() + CACHE_SECONDS
    for variant_id, details in found.items():
        _cache[(shop_id, variant_id)] = (expires, details)


def forget(shop_id: int | None = None) -> None:
    for key in [key for key in _cache if shop_id is None or key[0] == shop_id]:
        del _cache[key]
