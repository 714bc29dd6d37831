"""The webhook receivers' shop keys (`shops.service.webhook_signer`), kept a few seconds."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from app.shops import service
from app.shops.models import Shop
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The domain of each query for a shop, and each decryption, in order. A query takes a
    moment, as on a real database, so concurrent deliveries overlap."""
    seen: list[str] = []
    get_by_domain, decrypt = service.repository.get_by_domain, service.security.decrypt

    async def slow_get(session: Any, platform: str, domain: str) -> Shop | None:
        seen.append(domain)
        await asyncio.sleep(0.02)
        return await get_by_domain(session, platform, domain)

    def counted_decrypt(token: str) -> str:
        seen.append("decrypt")
        return decrypt(token)

    monkeypatch.setattr(service.repository, "get_by_domain", slow_get)
    monkeypatch.setattr(service.security, "decrypt", counted_decrypt)
    yield seen


async def test_concurrent_deliveries_for_one_shop_share_one_lookup(
    shop: Shop, lookups: list[str]
) -> None:
    signers = await asyncio.gather(
        *(service.webhook_signer("shopify", SHOP_DOMAIN) for _ in range(32)),
        service.webhook_signer("shopify", "unknown.myshopify.com"),
    )

    assert lookups.count(SHOP_DOMAIN) == 1 and lookups.count("decrypt") == 1
    assert lookups.count("unknown.myshopify.com") == 1  # another domain has its own
    assert {signer.secret for signer in signers[:32] if signer} == {SHOP_SECRET}
    assert signers[32] is None


async def test_a_lookup_that_fails_fails_its_waiters_and_is_not_kept(
    shop: Shop, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def database_down(*args: Any) -> Shop | None:
        lookups.append("down")
        await asyncio.sleep(0.02)
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(service.repository, "get_by_domain", database_down)
    failed = await asyncio.gather(
        *(service.webhook_signer("shopify", SHOP_DOMAIN) for _ in range(4)),
        return_exceptions=True,
    )
    monkeypatch.undo()

    assert lookups == ["down"]
    assert all(isinstance(outcome, ConnectionRefusedError) for outcome in failed)
    signer = await service.webhook_signer("shopify", SHOP_DOMAIN)  # asked again
    assert signer is not None and signer.secret == SHOP_SECRET


async def test_a_delivery_after_an_edit_does_not_share_a_lookup_begun_before_it(
    shop: Shop, lookups: list[str]
) -> None:
    before_the_edit = asyncio.create_task(service.webhook_signer("shopify", SHOP_DOMAIN))
    await asyncio.sleep(0.005)  # its query under way
    service.forget_signers()  # what an edit of the shop does
    after_the_edit = asyncio.create_task(service.webhook_signer("shopify", SHOP_DOMAIN))

    await asyncio.gather(before_the_edit, after_the_edit)

    assert lookups.count(SHOP_DOMAIN) == 2


async def test_what_a_lookup_read_before_an_edit_is_not_kept(
    shop: Shop, lookups: list[str]
) -> None:
    before_the_edit = asyncio.create_task(service.webhook_signer("shopify", SHOP_DOMAIN))
    await asyncio.sleep(0.005)
    service.forget_signers()
    await before_the_edit

    await service.webhook_signer("shopify", SHOP_DOMAIN)

    assert lookups.count(SHOP_DOMAIN) == 2  # read again, not the older read
