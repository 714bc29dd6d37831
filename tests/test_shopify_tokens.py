"""Shopify's expiring offline tokens, against the stand-in: installs ask for them, a token is
renewed before it runs out (once, however many calls want it), a refused refresh marks the
store, public installs on a non-expiring token move to an expiring pair, custom apps' tokens
are used as they are, and the daily renewal keeps quiet stores' refresh tokens alive."""

import asyncio
from datetime import timedelta

import httpx
import pytest

from app import security
from app.db import sessionmaker, utcnow
from app.settings import get_settings
from app.shops import repository as shops
from app.shops.models import Shop
from app.shops.service import connect_shopify, uninstall, webhook_secret
from integrations.shopify import catalog, tokens
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import _free_port
from tests.test_cli import at_standin, rebound
from tests.test_shopify_install import DOMAIN, add_store, callback, started_state

VARIANT = "44123456789012"


def sell_one_variant(standin: ShopifyStandin) -> None:
    standin.add_variant(
        DOMAIN, variant_id=int(VARIANT), title="M", price="89.00",
        product_title="Merino Crew Sweater", handle="merino-crew-sweater",
    )  # fmt: skip


async def installed(server: httpx.AsyncClient, standin: ShopifyStandin) -> Shop:
    """The store installed through the authorization-code grant."""
    add_store(standin)
    sell_one_variant(standin)
    assert (await callback(server, standin, await started_state(server))).status_code == 303
    return await stored()


async def stored() -> Shop:
    async with sessionmaker()() as session:
        shop = await shops.get_by_domain(session, "shopify", DOMAIN)
    assert shop is not None
    return shop


async def set_expiry(
    shop: Shop, *, token_in: timedelta, refresh_in: timedelta | None = None
) -> Shop:
    async with sessionmaker()() as session:
        row = await shops.get(session, shop.id or 0)
        assert row is not None
        row.token_expires_at = utcnow() + token_in
        if refresh_in is not None:
            row.refresh_token_expires_at = utcnow() + refresh_in
        await session.commit()
    return await stored()


def refreshes(standin: ShopifyStandin) -> int:
    return sum(1 for r in standin.token_requests if r["grant_type"] == "refresh_token")


async def test_an_install_keeps_an_expiring_token_and_its_refresh_token_encrypted(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await installed(server, standin)

    assert shop.access_token_encrypted and shop.refresh_token_encrypted
    assert shop.token_expires_at and shop.refresh_token_expires_at
    assert timedelta(minutes=55) < shop.token_expires_at - utcnow() <= timedelta(hours=1)
    assert shop.refresh_token_expires_at - utcnow() > timedelta(days=89)
    refresh_token = security.decrypt(shop.refresh_token_encrypted)
    assert refresh_token.startswith("shprt_") and refresh_token not in shop.refresh_token_encrypted
    access_token = security.decrypt(shop.access_token_encrypted)
    assert standin.token_expiry(access_token) is not None  # Shopify issued an expiring one


async def test_a_token_about_to_expire_is_renewed_before_the_call(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await set_expiry(await installed(server, standin), token_in=timedelta(minutes=2))
    old_access = security.decrypt(shop.access_token_encrypted or "")
    old_refresh = security.decrypt(shop.refresh_token_encrypted or "")

    details = await catalog.variant_details(shop, {VARIANT: None})

    assert details is not None and details[VARIANT].price is not None
    assert refreshes(standin) == 1
    renewed = await stored()
    assert security.decrypt(renewed.access_token_encrypted or "") != old_access
    assert renewed.token_expires_at and renewed.token_expires_at - utcnow() > timedelta(minutes=55)
    # The caller's copy has the new pair too, without it being a change to write again.
    assert shop.access_token_encrypted == renewed.access_token_encrypted
    # Using the new pair retired the old refresh token at Shopify.
    refused = await standin_refresh(standin, old_refresh)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def standin_refresh(standin: ShopifyStandin, refresh_token: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standin.app)) as client:
        return await client.post(
            f"http://{DOMAIN}/admin/oauth/access_token",
            json={
                "client_id": standin.client_id,
                "client_secret": standin.client_secret,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            },
        )


async def test_a_token_shopify_refuses_early_is_renewed_and_the_call_asked_again(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await installed(server, standin)
    standin.expire_tokens(DOMAIN)  # Shopify's clock says the hour is up; Rebound's does not

    details = await catalog.variant_details(shop, {VARIANT: None})

    assert details is not None and details[VARIANT].price is not None
    assert refreshes(standin) == 1
    assert (await stored()).token_invalid_at is None


async def test_calls_at_once_renew_the_token_once(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await set_expiry(await installed(server, standin), token_in=timedelta(seconds=-5))
    copies = [await stored() for _ in range(8)]  # as eight steps, each with its own row

    found = await asyncio.gather(*(catalog.variant_details(c, {VARIANT: None}) for c in copies))

    assert all(f is not None and f[VARIANT].price is not None for f in found)
    assert refreshes(standin) == 1
    assert {c.access_token_encrypted for c in copies} == {(await stored()).access_token_encrypted}
    assert shop.access_token_encrypted != copies[0].access_token_encrypted  # the old copy


async def test_a_refused_refresh_marks_the_store_and_opening_the_app_connects_it_again(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await set_expiry(await installed(server, standin), token_in=timedelta(seconds=-5))
    standin.expire_refresh_tokens(DOMAIN)

    assert await catalog.variant_details(shop, {VARIANT: None}) is None  # the email still goes
    assert shop.token_invalid_at is not None  # saved with the step's commit
    async with sessionmaker()() as session:
        session.add(shop)
        await session.commit()
    asked = len(standin.token_requests)
    assert await catalog.variant_details(await stored(), {VARIANT: None}) is None
    assert len(standin.token_requests) == asked  # a refused refresh token is not tried again

    assert (await open_app(server, standin)).status_code == 200
    again = await stored()
    assert again.token_invalid_at is None and again.refresh_token_encrypted
    assert await catalog.variant_details(again, {VARIANT: None}) is not None


async def open_app(server: httpx.AsyncClient, standin: ShopifyStandin) -> httpx.Response:
    """The merchant opens Rebound in the Shopify admin, with a fresh session token."""
    query = {
        "embedded": "1",
        "host": "aG9zdA",
        "shop": DOMAIN,
        "id_token": standin.id_token(DOMAIN),
    }
    return await server.get("/app", params=query)


async def connected_with(standin: ShopifyStandin, *, api_secret: str | None) -> Shop:
    """A store added with a non-expiring token: a public install from before expiring tokens
    (no API secret of its own) or a custom app (its own)."""
    add_store(standin)
    sell_one_variant(standin)
    async with sessionmaker()() as session:
        await connect_shopify(
            session, domain=DOMAIN, access_token=standin.token_for(DOMAIN), api_secret=api_secret
        )
        await session.commit()
    return await stored()


async def test_a_public_install_on_a_non_expiring_token_moves_to_an_expiring_one(
    standin: ShopifyStandin,
) -> None:
    shop = await connected_with(standin, api_secret=None)
    old = security.decrypt(shop.access_token_encrypted or "")
    standin.refuse_non_expiring = True  # January 1, 2027

    details = await catalog.variant_details(shop, {VARIANT: None})

    assert details is not None and details[VARIANT].price is not None
    assert [r["subject_token_type"] for r in standin.token_requests] == [tokens.OFFLINE_TOKEN_TYPE]
    moved = await stored()
    assert moved.refresh_token_encrypted and moved.token_expires_at
    assert security.decrypt(moved.access_token_encrypted or "") != old
    assert standin.token_expiry(security.decrypt(moved.access_token_encrypted or ""))


async def test_a_custom_apps_token_is_used_as_it_is(standin: ShopifyStandin) -> None:
    shop = await connected_with(standin, api_secret="custom-app-secret")

    assert await catalog.variant_details(shop, {VARIANT: None}) is not None
    assert await renew_daily() == "0 Shopify token(s) renewed, 0 refused, 0 due"

    assert standin.token_requests == []
    assert (await stored()).token_expires_at is None


async def renew_daily() -> str:
    return await tokens.renew_tokens({})


async def test_the_daily_renewal_keeps_refresh_tokens_with_under_30_days_left(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await installed(server, standin)
    await set_expiry(shop, token_in=timedelta(minutes=50), refresh_in=timedelta(days=60))

    assert await renew_daily() == "0 Shopify token(s) renewed, 0 refused, 0 due"
    assert refreshes(standin) == 0

    await set_expiry(shop, token_in=timedelta(minutes=50), refresh_in=timedelta(days=20))
    assert await renew_daily() == "1 Shopify token(s) renewed, 0 refused, 1 due"
    assert refreshes(standin) == 1
    renewed = await stored()
    assert renewed.refresh_token_expires_at
    assert renewed.refresh_token_expires_at - utcnow() > timedelta(days=89)

    standin.expire_refresh_tokens(DOMAIN)
    await set_expiry(shop, token_in=timedelta(minutes=50), refresh_in=timedelta(days=1))
    assert await renew_daily() == "0 Shopify token(s) renewed, 1 refused, 1 due"
    assert (await stored()).token_invalid_at is not None
    assert await renew_daily() == "0 Shopify token(s) renewed, 0 refused, 0 due"  # marked


async def test_the_daily_renewal_moves_public_installs_off_non_expiring_tokens(
    standin: ShopifyStandin,
) -> None:
    await connected_with(standin, api_secret=None)

    assert await renew_daily() == "1 Shopify token(s) renewed, 0 refused, 1 due"

    assert (await stored()).refresh_token_encrypted
    assert await renew_daily() == "0 Shopify token(s) renewed, 0 refused, 0 due"


async def test_opening_the_app_cycles_a_non_expiring_token(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    await connected_with(standin, api_secret=None)

    assert (await open_app(server, standin)).status_code == 200

    assert [r["subject_token_type"] for r in standin.token_requests] == [
        "urn:ietf:params:oauth:token-type:id_token"
    ]
    cycled = await stored()
    assert cycled.refresh_token_encrypted and cycled.token_expires_at


async def test_uninstalling_forgets_the_refresh_token_too(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await installed(server, standin)
    async with sessionmaker()() as session:
        row = await shops.get(session, shop.id or 0)
        assert row is not None
        await uninstall(session, row)
        await session.commit()

    gone = await stored()
    assert gone.access_token_encrypted is None and gone.refresh_token_encrypted is None
    assert gone.token_expires_at is None and gone.refresh_token_expires_at is None


async def add_by_cli(client_id: str, secret: str) -> tuple[int, str]:
    """`rebound shops add shopify` with the store's own app's client credentials."""
    return await rebound(
        "shops", "add", "shopify", "--domain", DOMAIN,
        "--client-id", client_id, "--client-secret", secret, env=at_standin(),
    )  # fmt: skip


async def test_a_stores_own_app_connects_with_its_client_credentials(
    standin: ShopifyStandin,
) -> None:
    add_store(standin)
    client_id, secret = standin.add_own_app(DOMAIN)

    code, output = await add_by_cli(client_id, secret)

    assert code == 0, output
    assert f"connected {DOMAIN} (Nordic Wool: SEK" in output
    shop = await stored()
    assert shop.client_id == client_id and shop.refresh_token_encrypted is None
    assert webhook_secret(shop) == secret  # the app's client secret signs its webhooks
    assert shop.token_expires_at
    assert timedelta(hours=23) < shop.token_expires_at - utcnow() <= timedelta(hours=24)


async def test_client_credentials_shopify_refuses_store_nothing(standin: ShopifyStandin) -> None:
    add_store(standin)
    client_id, _ = standin.add_own_app(DOMAIN)

    code, output = await add_by_cli(client_id, "shpss_mistyped")

    assert code == 2, output
    assert "Shopify refused the app's client credentials" in output and "invalid_client" in output
    assert "Nothing was stored" in output and "shpss_mistyped" not in output
    async with sessionmaker()() as session:
        assert await shops.get_by_domain(session, "shopify", DOMAIN) is None


async def test_a_stores_own_app_gets_a_new_token_when_one_runs_out(
    standin: ShopifyStandin,
) -> None:
    add_store(standin)
    sell_one_variant(standin)
    client_id, secret = standin.add_own_app(DOMAIN)
    code, output = await add_by_cli(client_id, secret)
    assert code == 0, output
    shop = await set_expiry(await stored(), token_in=timedelta(seconds=-5))
    first = shop.access_token_encrypted

    assert await catalog.variant_details(shop, {VARIANT: None}) is not None
    standin.expire_tokens(DOMAIN)  # and once more, refused by Shopify before Rebound's clock
    assert await catalog.variant_details(await stored(), {VARIANT: None}) is not None

    grants = [r["grant_type"] for r in standin.token_requests]
    assert grants == ["client_credentials"] * 3  # connecting, then each renewal
    assert (await stored()).access_token_encrypted not in (first, None)


async def test_client_credentials_and_a_token_together_are_refused(
    standin: ShopifyStandin,
) -> None:
    add_store(standin)
    client_id, secret = standin.add_own_app(DOMAIN)

    code, output = await rebound(
        "shops", "add", "shopify", "--domain", DOMAIN, "--client-id", client_id,
        "--client-secret", secret, "--access-token", "shpat_x", env=at_standin(),
    )  # fmt: skip

    assert code == 2 and "not both" in output, output
    assert standin.token_requests == []


async def test_a_renewal_shopify_cannot_answer_leaves_the_token_for_the_next_try(
    server: httpx.AsyncClient, standin: ShopifyStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = await set_expiry(await installed(server, standin), token_in=timedelta(seconds=-5))
    settings = get_settings()
    reachable = settings.shopify_api_origin
    monkeypatch.setattr(settings, "shopify_api_origin", f"http://127.0.0.1:{_free_port()}")

    # The email goes with the checkout's own data; nothing is marked, nothing lost.
    assert await catalog.variant_details(shop, {VARIANT: None}) is None
    assert (await stored()).token_invalid_at is None and shop.token_invalid_at is None

    monkeypatch.setattr(settings, "shopify_api_origin", reachable)
    assert await catalog.variant_details(await stored(), {VARIANT: None}) is not None
    assert refreshes(standin) == 1
