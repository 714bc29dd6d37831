"""The demo store: a clearly marked demo shop and shoppers who play storefront traffic at Rebound
as signed Shopify webhooks. Some buy, most abandon; some come back through the recovery email."""

import asyncio
import email
import logging
import random
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path

import httpx

from app.db import sessionmaker
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import service as flows_service
from flows.definitions import DEMO_DELAYS
from integrations.shopify.simulator import Checkout, Product, deliver
from integrations.shopify.standin import ShopifyStandin

log = logging.getLogger("rebound.demo")

DEMO_DOMAIN = "rebound-demo.myshopify.com"
DEMO_NAME = "Rebound Demo Store (demo)"

CATALOG = [
    Product("Merino Crew Sweater", "Charcoal / M", "89.00", "MCS-CHR-M", 9007199254741001, 1),
    Product("Merino Crew Sweater", "Oat / L", "89.00", "MCS-OAT-L", 9007199254741001, 2),
    Product("Wool Beanie", "Forest", "24.50", "WB-FOR", 9007199254741002, 3),
    Product("Trail Runner Socks", "3-pack", "18.00", "TRS-3", 9007199254741003, 4),
    Product("Waxed Canvas Tote", None, "64.00", "WCT", 9007199254741004, 5),
    Product("Down Vest", "Navy / S", "149.00", "DV-NAV-S", 9007199254741005, 6),
    Product("Ceramic Pour-Over Set", "Sand", "42.00", "CPO-SND", 9007199254741006, 7),
    Product("Linen Throw", "Clay", "79.00", "LT-CLY", 9007199254741007, 8),
]
FIRST_NAMES = [
    "Anna",
    "Björn",
    "Chloé",
    "Dmitri",
    "Elín",
    "Farah",
    "Gustav",
    "Hana",
    "Ivo",
    "Jonna",
]

RESTORE_LINK = re.compile(r"(https?://\S+/r/[A-Za-z0-9_.=-]+)")


SOLD_OUT = {"DV-NAV-S"}  # one item is sold out, so emails show how that looks


def stand_in_shopify() -> ShopifyStandin:
    """The demo store's Shopify: its products, prices and stock, and discount codes it makes."""
    standin = ShopifyStandin()
    standin.add_shop(DEMO_DOMAIN, name=DEMO_NAME, currency="USD")
    for product in CATALOG:
        standin.add_variant(
            DEMO_DOMAIN,
            variant_id=product.variant_id,
            title=product.variant_title or "Default Title",
            price=product.price,
            product_title=product.title,
            handle=product.sku.lower(),
            available=product.sku not in SOLD_OUT,
        )
    return standin


async def prepare(access_token: str) -> tuple[Shop, str]:
    """Create (or refresh) the demo shop with a fresh webhook secret, demo-speed delays, and a
    10 % offer in the last reminder."""
    api_secret = secrets.token_hex(24)
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session,
            domain=DEMO_DOMAIN,
            access_token=access_token,
            api_secret=api_secret,
            name=DEMO_NAME,
            is_demo=True,
        )
        shop.currency = "USD"
        # The demo plays a series in two minutes, whatever the hour: no waiting for the morning.
        shop.quiet_hours = shop.frequency_cap = None
        for flow, delays in DEMO_DELAYS.items():
            await flows_service.set_delays(session, shop, flow, delays)
            await flows_service.set_step_offer(
                session, shop, flow, len(delays), {"kind": "percentage", "value": "10"}
            )
        await session.commit()
    return shop, api_secret


@dataclass
class DemoStore:
    base_url: str
    api_secret: str
    outbox: Path | None
    shoppers: int = 24
    seed: int | None = None
    rng: random.Random = field(init=False)
    next_order: int = 1001
    waiting: dict[str, Checkout] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def run(self) -> None:
        print(f"[demo] {DEMO_NAME} is open: {self.shoppers} shoppers are on their way.")
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            visits = [asyncio.create_task(self._visit(client, n)) for n in range(self.shoppers)]
            readers = asyncio.create_task(self._read_inbox(client))
            await asyncio.gather(*visits)
            await readers

    async def _visit(self, client: httpx.AsyncClient, number: int) -> None:
        await asyncio.sleep(number * self.rng.uniform(2.0, 4.0))
        name = self.rng.choice(FIRST_NAMES)
        checkout = Checkout(
            shop_domain=DEMO_DOMAIN,
            email=f"{_ascii(name).lower()}.{number}@example.com",
            first_name=name,
            lines=[(self.rng.choice(CATALOG), self.rng.randint(1, 2))],
        )
        await self._send(client, "checkouts/create", checkout.payload())
        await asyncio.sleep(self.rng.uniform(1, 3))
        checkout.lines.append((self.rng.choice(CATALOG), 1))
        checkout.touch()
        await self._send(client, "checkouts/update", checkout.payload())
        items = sum(qty for _, qty in checkout.lines)
        if self.rng.random() < 0.25:
            print(f"[demo] {checkout.email} bought {items} items right away.")
            await self._order(client, checkout)
            return
        print(f"[demo] {checkout.email} left {items} items, {checkout.subtotal} USD, in the cart.")
        if checkout.email:
            self.waiting[checkout.email] = checkout

    async def _order(self, client: httpx.AsyncClient, checkout: Checkout) -> None:
        number, self.next_order = self.next_order, self.next_order + 1
        checkout.completed_at = checkout.updated_at = datetime.now(UTC)
        await self._send(client, "checkouts/update", checkout.payload())
        await self._send(client, "orders/create", checkout.order_payload(number))
        await self._send(client, "orders/paid", checkout.order_payload(number))

    async def _read_inbox(self, client: httpx.AsyncClient) -> None:
        """Shoppers read their email in the outbox; about a third come back and buy."""
        if self.outbox is None:
            return
        seen: set[Path] = set()
        deadline = asyncio.get_running_loop().time() + self.shoppers * 4 + 240
        while asyncio.get_running_loop().time() < deadline:
            for path in sorted(self.outbox.rglob("*.eml")):
                if path not in seen:
                    seen.add(path)
                    await self._maybe_return(client, email.message_from_bytes(path.read_bytes()))
            await asyncio.sleep(1)

    async def _maybe_return(self, client: httpx.AsyncClient, message: Message) -> None:
        checkout = self.waiting.get(str(message["To"]))
        link = RESTORE_LINK.search(_text_part(message))
        if checkout is None or link is None or self.rng.random() > 0.4:
            return
        await asyncio.sleep(self.rng.uniform(1, 4))
        # The link names APP_URL; the shopper here reaches the same server on this machine.
        path = "/r/" + link.group(1).split("/r/", 1)[1]
        answer = await client.get(path, follow_redirects=False)
        print(
            f"[demo] {checkout.email} clicked the email's link: {answer.status_code} to checkout."
        )
        if answer.status_code == 303:
            del self.waiting[checkout.email or ""]
            await asyncio.sleep(self.rng.uniform(1, 3))
            await self._order(client, checkout)

    async def _send(
        self, client: httpx.AsyncClient, topic: str, payload: dict[str, object]
    ) -> None:
        answer = await deliver(client, DEMO_DOMAIN, self.api_secret, topic, payload)
        if answer.status_code != 200:
            print(f"[demo] Rebound answered {answer.status_code} to {topic}: {answer.text}")


def _text_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8")
    return ""


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
