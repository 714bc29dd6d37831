"""The `rebound` command: run the service, connect shops, tune flows, replay the inbox."""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
import uvicorn

from app import migrate
from app.db import dispose_engine, sessionmaker
from app.inbox import repository as inbox_repository
from app.inbox.models import InboxStatus
from app.inbox.tasks import process_entry
from app.redis import embedded_redis, redis_settings
from app.settings import get_settings
from app.shops import repository as shops_repository
from app.shops.models import Shop
from app.shops.service import ShopError, connect_shopify, connect_woocommerce
from flows import service as flows_service
from flows.definitions import FLOW_NAMES
from flows.service import FlowSettingError, format_duration, parse_duration
from integrations.woocommerce import api as woocommerce_api
from integrations.woocommerce.connect import create_webhooks, read_store_settings

cli = typer.Typer(help="Rebound: recovery, post-purchase and win-back email for online stores.")
shops_cli = typer.Typer(help="Connect and list stores.")
flows_cli = typer.Typer(help="See and tune a store's flows.")
inbox_cli = typer.Typer(help="Webhook deliveries Rebound has stored.")
cli.add_typer(shops_cli, name="shops")
cli.add_typer(flows_cli, name="flows")
cli.add_typer(inbox_cli, name="inbox")

T = TypeVar("T")

ShopOption = Annotated[str, typer.Option("--shop", help="The store's domain, e.g. x.myshopify.com")]


class Platform(StrEnum):
    shopify = "shopify"
    woocommerce = "woocommerce"


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cli()


def _prepare_embedded_database() -> None:
    if get_settings().database_url is None:
        # The embedded SQLite file sets itself up; a configured database is migrated on release.
        migrate.upgrade()


def _run(work: Callable[[], Awaitable[T]]) -> T:
    _prepare_embedded_database()

    async def wrapped() -> T:
        try:
            return await work()
        finally:
            await dispose_engine()

    return asyncio.run(wrapped())


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@cli.command("migrate")
def migrate_command() -> None:
    """Apply the database migrations (SQLite or PostgreSQL, from DATABASE_URL)."""
    migrate.upgrade()
    typer.echo("database is up to date")


@cli.command()
def serve(
    demo: Annotated[
        bool, typer.Option(help="Open a demo store that plays shoppers at Rebound.")
    ] = False,
    host: str = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="HTTP port (default: PORT, else 8000)")] = None,
) -> None:
    """Run the API and the worker together, on embedded defaults unless configured otherwise."""
    settings = get_settings()
    if port is not None:
        settings.port = port
    migrate.upgrade()
    with embedded_redis(settings), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_all(host, settings.port, demo))


async def _serve_all(host: str, port: int, demo: bool) -> None:
    from app.main import create_app
    from app.worker import make_worker

    server = uvicorn.Server(uvicorn.Config(create_app(), host=host, port=port, access_log=not demo))
    worker = make_worker(handle_signals=False)
    background = [asyncio.create_task(worker.async_run())]
    if demo:
        # The demo's story is told by its own lines and Rebound's flow log, not every job.
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
        background.append(asyncio.create_task(_play_demo(server, port)))
    _announce(port, demo)
    try:
        await server.serve()
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await worker.close()
        await dispose_engine()


async def _play_demo(server: uvicorn.Server, port: int) -> None:
    from app.demo.store import DEMO_DOMAIN, DemoStore, prepare, stand_in_shopify
    from integrations.shopify.standin import serve as serve_stand_in

    settings = get_settings()
    standin = stand_in_shopify()
    # The demo store's Admin API (products, discount codes) is a local Shopify stand-in.
    async with serve_stand_in(standin) as origin:
        settings.shopify_api_origin = origin
        _, api_secret = await prepare(standin.token_for(DEMO_DOMAIN))
        while not server.started:  # noqa: ASYNC110  (uvicorn offers no started event)
            await asyncio.sleep(0.1)
        outbox = settings.outbox_dir if settings.smtp_url is None else None
        await DemoStore(f"http://127.0.0.1:{port}", api_secret, outbox).run()
        print("[demo] All demo shoppers have been. Rebound keeps running; Ctrl-C stops it.")
        await asyncio.Event().wait()  # the stand-in serves the emails still to come


def _announce(port: int, demo: bool) -> None:
    settings = get_settings()
    mail = "SMTP (SMTP_URL)" if settings.smtp_url else f"outbox folder {settings.outbox_dir}"
    typer.echo(f"Rebound on http://127.0.0.1:{port}  database: {_safe_url(settings.database)}")
    typer.echo(f"Email goes to: {mail}")
    if demo:
        typer.echo(
            "DEMO MODE: a demo store sends simulated shoppers; nothing here is a real store."
        )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@cli.command()
def api(
    host: str = "0.0.0.0",  # noqa: S104  (a production server listens on every interface)
    port: Annotated[int | None, typer.Option(help="HTTP port (default: PORT, else 8000)")] = None,
) -> None:
    """Run only the HTTP API (webhooks, links, health)."""
    settings = get_settings()
    if port is not None:
        settings.port = port
    _prepare_embedded_database()
    with embedded_redis(settings):
        uvicorn.run("app.main:create_app", factory=True, host=host, port=settings.port)


@cli.command()
def worker() -> None:
    """Run only the worker: processes deliveries and sends due emails."""
    from app.worker import make_worker

    settings = get_settings()
    _prepare_embedded_database()
    with embedded_redis(settings):
        make_worker().run()


@shops_cli.command("add")
def shops_add(
    platform: Annotated[Platform, typer.Argument(help="The store's platform")],
    domain: Annotated[str | None, typer.Option(help="Shopify: STORE.myshopify.com")] = None,
    access_token: Annotated[
        str | None, typer.Option(help="Shopify: the custom app's Admin API access token")
    ] = None,
    api_secret: Annotated[
        str | None, typer.Option(help="Shopify: the secret that signs the store's webhooks")
    ] = None,
    url: Annotated[str | None, typer.Option(help="WooCommerce: https://STORE")] = None,
    consumer_key: Annotated[str | None, typer.Option(help="WooCommerce: ck_…")] = None,
    consumer_secret: Annotated[str | None, typer.Option(help="WooCommerce: cs_…")] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            help="WooCommerce: the secret of webhooks you made by hand (else Rebound makes them)"
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The store's name in emails")] = None,
) -> None:
    """Connect a store with credentials made in its admin (no OAuth)."""
    try:
        if platform == Platform.shopify:
            message = _run(lambda: _add_shopify(domain, access_token, api_secret, name))
        else:
            message = _run(
                lambda: _add_woocommerce(url, consumer_key, consumer_secret, webhook_secret, name)
            )
    except ShopError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(message)


async def _add_shopify(
    domain: str | None, access_token: str | None, api_secret: str | None, name: str | None
) -> str:
    if not domain or not access_token:
        raise ShopError("a Shopify store needs --domain and --access-token")
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session, domain=domain, access_token=access_token, api_secret=api_secret, name=name
        )
        await session.commit()
    url = get_settings().public_url
    return f"connected {shop.domain}. In Shopify, send its webhooks to {url}/webhooks/shopify"


async def _add_woocommerce(
    url: str | None,
    consumer_key: str | None,
    consumer_secret: str | None,
    webhook_secret: str | None,
    name: str | None,
) -> str:
    if not url or not consumer_key or not consumer_secret:
        raise ShopError("a WooCommerce store needs --url, --consumer-key and --consumer-secret")
    secret = webhook_secret or secrets.token_urlsafe(32)
    async with sessionmaker()() as session:
        shop = await connect_woocommerce(
            session,
            url=url,
            consumer_key=consumer_key,
            consumer_secret=consumer_secret,
            webhook_secret=secret,
            name=name,
        )
        try:
            await read_store_settings(shop)
            created = [] if webhook_secret else await create_webhooks(shop, secret)
        except woocommerce_api.WooCommerceApiError as exc:
            raise ShopError(f"the store answered: {exc}") from exc
        await session.commit()
    delivery = f"{get_settings().public_url}/webhooks/woocommerce"
    if webhook_secret:
        return f"connected {shop.domain}; its webhooks must deliver to {delivery}"
    return f"connected {shop.domain}; {len(created)} webhooks created, delivering to {delivery}"


@shops_cli.command("list")
def shops_list() -> None:
    """List connected stores."""

    async def listing() -> list[Shop]:
        async with sessionmaker()() as session:
            return list(await shops_repository.list_all(session))

    for shop in _run(listing):
        notes = [
            "demo" if shop.is_demo else "",
            "uninstalled" if shop.uninstalled_at else "",
            "token revoked: connect the store again" if shop.token_invalid_at else "",
        ]
        flags = "".join(f"  [{note}]" for note in notes if note)
        typer.echo(f"{shop.domain}\t{shop.platform}\t{shop.name}{flags}")


async def _shop(session: Any, domain: str) -> Shop:
    shop = await shops_repository.get_by_domain(session, "shopify", domain.strip().lower())
    if shop is None:
        raise FlowSettingError(f"no connected store {domain!r}; see `rebound shops list`")
    return shop


def _edit_flow(
    domain: str, edit: Callable[[Any, Shop], Awaitable[Any]], done: Callable[[Any], str]
) -> None:
    async def work() -> str:
        async with sessionmaker()() as session:
            result = await edit(session, await _shop(session, domain))
            await session.commit()
            return done(result)

    try:
        typer.echo(_run(work))
    except FlowSettingError as exc:
        raise _fail(str(exc)) from exc


@flows_cli.command("list")
def flows_list(shop: ShopOption) -> None:
    """Show each flow, on or off, with its step delays."""

    async def listing(session: Any, found: Shop) -> str:
        from flows import repository

        assert found.id is not None
        rows = []
        for flow in await repository.list_flows(session, found.id):
            delays = ", ".join(
                format_duration(step["delay"])
                + (f" ({_describe(step['offer'])})" if step.get("offer") else "")
                for step in flow.steps
            )
            rows.append(f"{flow.name}\t{'on' if flow.enabled else 'off'}\t{delays}")
        return "\n".join(rows)

    _edit_flow(shop, listing, str)


def _describe(offer: dict[str, Any]) -> str:
    if offer["kind"] == "percentage":
        return f"{offer['value']}% off"
    if offer["kind"] == "fixed_amount":
        return f"{offer['value']} off"
    return "free shipping"


@flows_cli.command("set")
def flows_set(
    shop: ShopOption,
    flow: Annotated[str, typer.Argument(help=f"One of: {', '.join(FLOW_NAMES)}")],
    step: Annotated[int, typer.Option(help="Which step, counting from 1")],
    delay: Annotated[
        str | None, typer.Option(help="Wait before this step: 0s, 90m, 24h, 3d")
    ] = None,
    offer: Annotated[
        str | None, typer.Option(help="The step's offer: 10%, 5.00 (off), free-shipping, none")
    ] = None,
) -> None:
    """Set a flow step's delay (counted from when the cart was last touched) and its offer."""
    if delay is None and offer is None:
        raise _fail("say what to set: --delay, --offer or both")
    try:
        seconds = parse_duration(delay) if delay is not None else None
        new_offer = flows_service.parse_offer(offer) if offer is not None else None
    except FlowSettingError as exc:
        raise _fail(str(exc)) from exc

    async def edit(session: Any, found: Shop) -> str:
        said = []
        if seconds is not None:
            await flows_service.set_step_delay(session, found, flow, step, seconds)
            said.append(f"waits {format_duration(seconds)}")
        if offer is not None:
            await flows_service.set_step_offer(session, found, flow, step, new_offer)
            said.append(f"offers {offer}" if new_offer else "has no offer")
        return f"{flow} step {step} now {' and '.join(said)} (new enrollments)"

    _edit_flow(shop, edit, str)


def _switch(shop: str, flow: str, enabled: bool) -> None:
    _edit_flow(
        shop,
        lambda session, found: flows_service.set_enabled(session, found, flow, enabled),
        lambda _: f"{flow} is {'on' if enabled else 'off'}",
    )


@flows_cli.command("enable")
def flows_enable(shop: ShopOption, flow: str) -> None:
    """Switch a flow on."""
    _switch(shop, flow, True)


@flows_cli.command("disable")
def flows_disable(shop: ShopOption, flow: str) -> None:
    """Switch a flow off; running enrollments end before their next email."""
    _switch(shop, flow, False)


@inbox_cli.command("list")
def inbox_list(
    status: Annotated[InboxStatus, typer.Option(help="Which entries")] = InboxStatus.FAILED,
) -> None:
    """List stored deliveries with a status (failed by default), with their errors."""

    async def listing() -> list[str]:
        async with sessionmaker()() as session:
            entries = await inbox_repository.with_status(session, status)
            return [
                f"{e.id}\t{e.topic}\t{e.received_at:%Y-%m-%d %H:%M}\t{e.error or ''}"
                for e in entries
            ]

    for line in _run(listing):
        typer.echo(line)


@inbox_cli.command("replay")
def inbox_replay() -> None:
    """Process failed deliveries again, here and now; prints each outcome."""

    async def replay() -> tuple[int, int]:
        from arq import create_pool

        redis = await create_pool(redis_settings(get_settings()))
        try:
            async with sessionmaker()() as session:
                failed = [
                    e.id for e in await inbox_repository.with_status(session, InboxStatus.FAILED)
                ]
            handled = 0
            for number, entry_id in enumerate(failed, start=1):
                assert entry_id is not None
                outcome = await process_entry(entry_id, redis)
                handled += outcome == "handled"
                typer.echo(f"[{number}/{len(failed)}] entry {entry_id}: {outcome}")
            return handled, len(failed)
        finally:
            await redis.aclose()

    with embedded_redis(get_settings()):
        handled, total = _run(replay)
    typer.echo(
        f"replayed {total} failed deliveries: {handled} handled, {total - handled} still failing"
    )


if __name__ == "__main__":
    main()
