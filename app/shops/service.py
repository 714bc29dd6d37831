"""Connecting shops. Services never commit: the CLI command or task around them does."""

import json
import logging
import re
from urllib.parse import urlsplit

from sqlmodel.ext.asyncio.session import AsyncSession

from app import security
from app.db import utcnow
from app.settings import get_settings
from app.shops import repository
from app.shops.models import Shop
from flows import service as flows_service

log = logging.getLogger("rebound.shops")

SHOPIFY_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


class ShopError(ValueError):
    """A shop cannot be connected as asked; the message says why."""


def normalize_shopify_domain(domain: str) -> str:
    domain = domain.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not SHOPIFY_DOMAIN.fullmatch(domain):
        raise ShopError(f"{domain!r} is not a shop domain like your-store.myshopify.com")
    return domain


async def connect_shopify(
    session: AsyncSession,
    *,
    domain: str,
    access_token: str,
    api_secret: str | None,
    name: str | None = None,
    is_demo: bool = False,
) -> Shop:
    """Add a Shopify store, or update the credentials of one already added."""
    domain = normalize_shopify_domain(domain)
    if not access_token.strip():
        raise ShopError("the access token is empty")
    if not api_secret and get_settings().shopify_api_secret is None:
        raise ShopError(
            "no API secret: pass --api-secret (the custom app's API secret key, which signs "
            "its webhooks) or set SHOPIFY_API_SECRET"
        )
    shop = await repository.get_by_domain(session, "shopify", domain)
    if shop is None:
        shop = Shop(platform="shopify", domain=domain, name=name or domain, is_demo=is_demo)
        session.add(shop)
        await session.flush()
        await flows_service.install_defaults(session, shop)
    shop.uninstalled_at = None  # a reinstall starts clean and keeps the merchant's flow settings
    shop.token_invalid_at = None
    shop.access_token_encrypted = security.encrypt(access_token.strip())
    shop.api_secret_encrypted = security.encrypt(api_secret) if api_secret else None
    if name:
        shop.name = name
    return shop


def webhook_secret(shop: Shop) -> str | None:
    """The secret that signs this shop's webhooks: its own API secret, else SHOPIFY_API_SECRET."""
    if shop.api_secret_encrypted:
        return security.decrypt(shop.api_secret_encrypted)
    if shop.platform != "shopify":
        return None
    fallback = get_settings().shopify_api_secret
    return fallback.get_secret_value() if fallback else None


def normalize_store_url(url: str) -> str:
    """A WooCommerce store's base URL: https, no trailing slash, no query."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise ShopError(f"{url!r} is not a store address like https://store.example")
    return f"https://{parts.netloc.lower()}{parts.path.rstrip('/')}"


async def connect_woocommerce(
    session: AsyncSession,
    *,
    url: str,
    consumer_key: str,
    consumer_secret: str,
    webhook_secret: str,
    name: str | None = None,
) -> Shop:
    """Add a WooCommerce store, or update the keys of one already added."""
    base_url = normalize_store_url(url)
    if not consumer_key.startswith("ck_") or not consumer_secret.startswith("cs_"):
        raise ShopError("WooCommerce keys look like ck_… (consumer key) and cs_… (consumer secret)")
    domain = urlsplit(base_url).netloc
    shop = await repository.get_by_domain(session, "woocommerce", domain)
    if shop is None:
        shop = Shop(platform="woocommerce", domain=domain, name=name or domain)
        session.add(shop)
        await session.flush()
        await flows_service.install_defaults(session, shop)
    shop.base_url = base_url
    shop.uninstalled_at = None
    shop.token_invalid_at = None
    shop.access_token_encrypted = security.encrypt(
        json.dumps({"consumer_key": consumer_key, "consumer_secret": consumer_secret})
    )
    shop.api_secret_encrypted = security.encrypt(webhook_secret)
    if name:
        shop.name = name
    return shop


def woocommerce_keys(shop: Shop) -> tuple[str, str] | None:
    """The store's consumer key and secret, when it is connected."""
    if shop.platform != "woocommerce" or not shop.access_token_encrypted:
        return None
    keys = json.loads(security.decrypt(shop.access_token_encrypted))
    return keys["consumer_key"], keys["consumer_secret"]


async def uninstall(session: AsyncSession, shop: Shop) -> None:
    """From now on nothing goes out for this shop: token gone, running series ended."""
    assert shop.id is not None
    shop.uninstalled_at = utcnow()
    shop.access_token_encrypted = None
    ended = await flows_service.end_all_enrollments(session, shop.id, "uninstalled")
    log.info("shop %s uninstalled Rebound; %s running series ended", shop.domain, ended)
