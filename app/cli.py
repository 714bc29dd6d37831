"""The `rebound` command: run the service, connect shops, tune flows, replay the inbox."""

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvicorn

from app import migrate
from app.db import dispose_engine, sessionmaker, utcnow
from app.inbox import repository as inbox_repository
from app.inbox.models import InboxStatus
from app.inbox.tasks import process_entry
from app.redis import embedded_redis, redis_settings
from app.settings import get_settings
from app.shops import repository as shops_repository
from app.shops import service as shops_service
from app.shops.models import Shop
from app.shops.service import (
    ShopError,
    check_shopify_credentials,
    connect_shopify,
    connect_woocommerce,
)
from flows import service as flows_service
from flows.definitions import FLOW_NAMES
from flows.service import FlowSettingError, format_duration, parse_duration
from integrations.shopify import admin as shopify_admin
from integrations.shopify import tokens
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
        shop, api_secret = await prepare(standin.token_for(DEMO_DOMAIN))
        while not server.started:  # noqa: ASYNC110  (uvicorn offers no started event)
            await asyncio.sleep(0.1)
        from app.api.auth import admin_login_link

        print(f"[demo] The merchant's admin (one-time link, 15 minutes): {admin_login_link(shop)}")
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
        _fast_event_loop()
        make_worker().run()


def _fast_event_loop() -> None:
    """uvloop, as `rebound api` has it through uvicorn: the worker's one thread spent an eighth
    of its time in asyncio's own loop (bench/send.py). Plain asyncio where uvloop is missing."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@shops_cli.command("add")
def shops_add(
    platform: Annotated[Platform, typer.Argument(help="The store's platform")],
    domain: Annotated[str | None, typer.Option(help="Shopify: STORE.myshopify.com")] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Shopify: the client id of the store's app (Dev Dashboard)")
    ] = None,
    client_secret: Annotated[
        str | None, typer.Option(help="Shopify: that app's client secret")
    ] = None,
    access_token: Annotated[
        str | None,
        typer.Option(help="Shopify: an admin-made custom app's Admin API access token (shpat_…)"),
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
    """Connect a store with credentials made for it (no OAuth): Shopify, its own app's client
    credentials or an admin-made custom app's token; WooCommerce, REST API keys."""
    try:
        if (client_id or client_secret) and (access_token or api_secret):
            raise ShopError("pass --client-id and --client-secret, or --access-token, not both")
        if platform == Platform.shopify and (client_id or client_secret):
            message = _run(lambda: _add_shopify_app(domain, client_id, client_secret, name))
        elif platform == Platform.shopify:
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
    """A store connected with an admin-made custom app's fixed token."""
    if not domain or not access_token:
        raise ShopError("a Shopify store needs --domain and --access-token")
    domain = check_shopify_credentials(domain, access_token, api_secret)
    grant = tokens.Grant(access_token.strip())  # such a token does not expire
    return await _keep_shopify(domain, grant, api_secret, name)


async def _add_shopify_app(
    domain: str | None, client_id: str | None, client_secret: str | None, name: str | None
) -> str:
    """A store connected with its own app's client credentials: Shopify's way for an app made
    in the Dev Dashboard (admin-made custom apps can't be created since 2026). The client
    secret also signs the app's webhooks."""
    if not domain or not client_id or not client_id.strip() or not client_secret:
        raise ShopError("a Shopify app needs --domain, --client-id and --client-secret")
    domain = check_shopify_credentials(domain, client_id, client_secret)
    try:
        grant = await tokens.client_credentials(domain, client_id.strip(), client_secret)
    except shopify_admin.ShopifyApiError as exc:
        raise ShopError(
            f"Shopify refused the app's client credentials for {domain}: {exc}. Check the client "
            "id and secret, and that the app is installed on this store. Nothing was stored."
        ) from exc
    return await _keep_shopify(domain, grant, client_secret, name, client_id.strip())


async def _keep_shopify(
    domain: str,
    grant: tokens.Grant,
    api_secret: str | None,
    name: str | None,
    client_id: str | None = None,
) -> str:
    """Read the store with the token, then store it: a token Shopify refuses leaves no shop."""
    # The install module brings the web routes with it: imported only when a store is added.
    from integrations.shopify.install import keep_shop_settings

    info = await _shopify_shop(domain, grant.access_token)
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session,
            domain=domain,
            access_token=grant.access_token,
            api_secret=api_secret,
            name=name or info.name,
            client_id=client_id,
        )
        tokens.keep_grant(shop, grant)
        keep_shop_settings(shop, info)
        await session.commit()
    url = get_settings().public_url
    learned = ", ".join(filter(None, (shop.currency, shop.timezone, shop.country_code)))
    return (
        f"connected {shop.domain} ({shop.name}: {learned}). "
        f"In Shopify, send its webhooks to {url}/webhooks/shopify"
    )


async def _shopify_shop(domain: str, access_token: str) -> shopify_admin.ShopInfo:
    """The store's settings, read with the token as the install reads them."""
    try:
        return await shopify_admin.fetch_shop(domain, access_token.strip())
    except shopify_admin.ShopifyTokenRevoked as exc:
        raise ShopError(
            f"Shopify refused the access token for {domain} (401): pass the custom app's Admin "
            "API access token (shpat_…). Nothing was stored."
        ) from exc
    except shopify_admin.ShopifyApiError as exc:
        raise ShopError(
            f"could not read the store from Shopify: {exc}. Nothing was stored."
        ) from exc


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
    shop = await shops_repository.find_by_domain(session, domain)
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
def flows_list(
    shop: ShopOption,
    as_json: Annotated[bool, typer.Option("--json", help="The flows as data, for scripts")] = False,
) -> None:
    """Show each flow, on or off, with its steps (delay, anchor, offer) and settings."""

    async def listing(session: Any, found: Shop) -> str:
        from flows import repository
        from flows.definitions import settings_for

        assert found.id is not None
        flows = await repository.list_flows(session, found.id)
        if as_json:
            return json.dumps(
                [
                    {
                        "name": flow.name,
                        "enabled": flow.enabled,
                        "version": flow.version,
                        "steps": flow.steps,
                        "settings": settings_for(flow.name, flow.settings),
                    }
                    for flow in flows
                ],
                indent=2,
            )
        return "\n".join(
            f"{flow.name}\t{'on' if flow.enabled else 'off'}\t"
            + ", ".join(_describe_step(step) for step in flow.steps)
            for flow in flows
        )

    _edit_flow(shop, listing, str)


def _describe_step(step: dict[str, Any]) -> str:
    after = step.get("after", "trigger")
    text = format_duration(step["delay"]) + (f" after {after}" if after != "trigger" else "")
    text = f"{step.get('key', step.get('template'))} {text}"
    if step.get("offer"):
        text += f" ({_describe(step['offer'])})"
    if step.get("offers"):
        text += " (offer by segment)"
    if not step.get("enabled", True):
        text += " [off]"
    return text


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
    step: Annotated[int | None, typer.Option(help="Which step, counting from 1")] = None,
    delay: Annotated[
        str | None, typer.Option(help="Wait before this step: 0s, 90m, 24h, 3d")
    ] = None,
    offer: Annotated[
        str | None, typer.Option(help="The step's offer: 10%, 5.00 (off), free-shipping, none")
    ] = None,
    step_on: Annotated[
        bool | None, typer.Option("--step-on/--step-off", help="Switch the step on or off")
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(help="A flow setting as KEY=VALUE, e.g. min_cart_value=50 (repeatable)"),
    ] = None,
    lang: Annotated[
        str | None, typer.Option(help="With --subject/--intro/--preheader: their language")
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Your own subject line ({{ first_name }} allowed; '' resets)")
    ] = None,
    intro: Annotated[
        str | None, typer.Option(help="Your own message, a paragraph per line ('' resets)")
    ] = None,
    preheader: Annotated[
        str | None, typer.Option(help="Your own preview line after the subject ('' resets)")
    ] = None,
) -> None:
    """Tune a flow: a step's delay, offer or on/off, and the flow's settings. Edits apply to
    new enrollments; running ones keep the version they started with."""
    words = any(part is not None for part in (subject, intro, preheader))
    step_edits = delay is not None or offer is not None or step_on is not None or words
    if not step_edits and not setting:
        raise _fail(
            "say what to set: --delay, --offer, --step-on/--step-off, "
            "--subject/--intro/--preheader or --setting"
        )
    if words and lang is None:
        raise _fail("say which language --subject, --intro and --preheader are for with --lang")
    if step_edits and step is None:
        raise _fail("say which step with --step N")
    try:
        seconds = parse_duration(delay) if delay is not None else None
        new_offer = flows_service.parse_offer(offer) if offer is not None else None
        settings = [_setting(item) for item in setting or []]
    except FlowSettingError as exc:
        raise _fail(str(exc)) from exc

    async def edit(session: Any, found: Shop) -> str:
        said = []
        if seconds is not None:
            assert step is not None
            await flows_service.set_step_delay(session, found, flow, step, seconds)
            said.append(f"step {step} waits {format_duration(seconds)}")
        if offer is not None:
            assert step is not None
            await flows_service.set_step_offer(session, found, flow, step, new_offer)
            said.append(f"step {step} " + (f"offers {offer}" if new_offer else "has no offer"))
        if step_on is not None:
            assert step is not None
            await flows_service.set_step_enabled(session, found, flow, step, step_on)
            said.append(f"step {step} is {'on' if step_on else 'off'}")
        if words:
            assert step is not None and lang is not None
            await flows_service.set_step_words(
                session, found, flow, step, lang, subject, intro, preheader
            )
            said.append(f"step {step} has your own words in {lang}")
        for key, value in settings:
            await flows_service.set_setting(session, found, flow, key, value)
            said.append(f"{key} is {value}")
        return f"{flow}: {', '.join(said)} (new enrollments)"

    _edit_flow(shop, edit, str)


@flows_cli.command("export")
def flows_export(
    shop: ShopOption,
    flow: Annotated[str, typer.Argument(help=f"One of: {', '.join(FLOW_NAMES)}")],
) -> None:
    """Print a flow's steps as JSON, to edit and give back to `rebound flows import`."""

    async def export(session: Any, found: Shop) -> str:
        stored = await flows_service.shop_flow(session, found, flow)
        return json.dumps({"steps": stored.steps}, indent=2, ensure_ascii=False)

    _edit_flow(shop, export, str)


@flows_cli.command("import")
def flows_import(
    shop: ShopOption,
    flow: Annotated[str, typer.Argument(help=f"One of: {', '.join(FLOW_NAMES)}")],
    file: Annotated[typer.FileText, typer.Argument(help="JSON from `flows export`; - for stdin")],
) -> None:
    """Replace a flow's steps with the file's: add, remove or reorder steps, change templates,
    conditions and offers. Every step is checked before any is kept; running series keep the
    version they started with."""
    try:
        document = json.load(file)
    except ValueError as exc:
        raise _fail(f"{file.name} is not JSON: {exc}") from exc
    steps: Any = document.get("steps") if isinstance(document, dict) else document

    async def replace(session: Any, found: Shop) -> str:
        stored = await flows_service.set_steps(session, found, flow, steps)
        return f"{flow}: {len(stored.steps)} steps, version {stored.version} (new enrollments)"

    _edit_flow(shop, replace, str)


def _setting(item: str) -> tuple[str, Any]:
    """KEY=VALUE with the value read as JSON where it can be (50, 0.02, none → null), else text."""
    key, separator, raw = item.partition("=")
    if not separator or not key.strip():
        raise FlowSettingError(f"{item!r} is not KEY=VALUE")
    text = raw.strip()
    if text.lower() in ("none", "off", "null", ""):
        return key.strip(), None
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return key.strip(), value


def _switch(shop: str, flow: str, enabled: bool) -> None:
    _edit_flow(
        shop,
        lambda session, found: flows_service.set_enabled(session, found, flow, enabled),
        lambda _: f"{flow} is {'on' if enabled else 'off'}",
    )


@shops_cli.command("set")
def shops_set(
    shop: ShopOption,
    quiet_hours: Annotated[
        str | None, typer.Option(help="No marketing email in these hours: 21:00-08:00, or off")
    ] = None,
    frequency_cap: Annotated[
        str | None,
        typer.Option(help="At most one marketing email per customer across flows: 16h, or off"),
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="The shop's time zone, e.g. Europe/Stockholm")
    ] = None,
    mail_transport: Annotated[
        str | None,
        typer.Option(
            help="The shop's own mail transport (smtp://…, smtps://…, postmark://TOKEN@, "
            "ses://KEY:SECRET@REGION, outbox), or default"
        ),
    ] = None,
) -> None:
    """Set the shop's sending rules: quiet hours, frequency cap, time zone, mail transport."""
    if quiet_hours is None and frequency_cap is None and timezone is None and not mail_transport:
        raise _fail(
            "say what to set: --quiet-hours, --frequency-cap, --timezone or --mail-transport"
        )

    async def edit(session: Any, found: Shop) -> str:
        transport = None
        try:
            shops_service.set_sending_rules(
                found, quiet_hours=quiet_hours, frequency_cap=frequency_cap, timezone=timezone
            )
            if mail_transport:
                transport = shops_service.set_mail_transport(found, mail_transport)
        except shops_service.SendingRuleError as exc:
            raise FlowSettingError(str(exc)) from exc
        cap = format_duration(found.frequency_cap) if found.frequency_cap else "off"
        # The transport's kind only: its URL holds credentials.
        sends_by = f", mail transport {transport}" if transport else ""
        return (
            f"{found.domain}: quiet hours {found.quiet_hours or 'off'}, "
            f"frequency cap {cap}, time zone {found.timezone or 'UTC'}{sends_by}"
        )

    _edit_flow(shop, edit, str)


@shops_cli.command("profile")
def shops_profile(
    shop: ShopOption,
    sender_name: Annotated[
        str | None, typer.Option(help="The From name (default: the shop's)")
    ] = None,
    sender_address: Annotated[
        str | None,
        typer.Option(help="The From address: on MAIL_FROM's domain, or any with the shop's own"),
    ] = None,
    reply_to: Annotated[str | None, typer.Option(help="Where replies go")] = None,
    logo_url: Annotated[str | None, typer.Option(help="https:// link to the logo")] = None,
    accent_color: Annotated[
        str | None, typer.Option(help="Buttons and links, e.g. #2f6f4e")
    ] = None,
    phone: Annotated[str | None, typer.Option(help="Shown in the contact block")] = None,
    contact_email: Annotated[str | None, typer.Option(help="Shown in the contact block")] = None,
    chat_url: Annotated[str | None, typer.Option(help="https:// link to the shop's chat")] = None,
    social: Annotated[
        list[str] | None, typer.Option(help="NETWORK=https://… (repeatable; NETWORK=off removes)")
    ] = None,
    tracking: Annotated[
        bool | None, typer.Option("--tracking/--no-tracking", help="Click and open tracking")
    ] = None,
) -> None:
    """How the store's emails look and whom they come from; any field can be set to off."""
    given = {
        "sender_name": sender_name, "sender_address": sender_address, "reply_to": reply_to,
        "logo_url": logo_url,
        "accent_color": accent_color, "phone": phone, "contact_email": contact_email,
        "chat_url": chat_url,
    }  # fmt: skip
    changes: dict[str, str | None] = {k: v for k, v in given.items() if v is not None}
    networks: dict[str, str | None] = {}
    for item in social or []:
        network, separator, url = item.partition("=")
        if not separator:
            raise _fail(f"{item!r} is not NETWORK=URL")
        networks[network] = url

    async def edit(session: Any, found: Shop) -> str:
        try:
            profile = shops_service.set_profile(found, changes, networks, tracking)
        except shops_service.SendingRuleError as exc:
            raise FlowSettingError(str(exc)) from exc
        shown = json.dumps(profile, indent=2, sort_keys=True)
        return f"{found.domain}: tracking {'on' if found.tracking else 'off'}\n{shown}"

    _edit_flow(shop, edit, str)


@flows_cli.command("activity")
def flows_activity(
    shop: ShopOption,
    limit: Annotated[int, typer.Option(help="How many of the latest emails")] = 30,
) -> None:
    """What the flows did lately: each email sent, skipped (and why), failed (and why), offers
    withheld; then the series waiting for a parcel, the morning or smart sending."""

    async def listing(session: Any, found: Shop) -> str:
        from flows import repository
        from flows.models import STUCK_NOTE, may_not_have_been_sent

        assert found.id is not None
        lines, now = [], utcnow()
        for send, enrollment in await repository.recent_activity(session, found.id, limit):
            step = enrollment.steps[send.step]["key"] if send.step >= 0 else "alert"
            note = send.error or ""
            if may_not_have_been_sent(send, now):
                note = f"{STUCK_NOTE} (Message-ID {send.message_id or 'not made yet'}); {note}"
                note = note.rstrip("; ")
            if send.offer_skipped:
                note = f"{note}; offer withheld: {send.offer_skipped}".lstrip("; ")
            elif send.discount_code:
                note = f"{note}; offer {send.discount_code}".lstrip("; ")
            when = f"{send.claimed_at:%Y-%m-%d %H:%M}"
            lines.append(
                f"{when}\t{enrollment.flow}\t{step}\t{send.email}\t{send.status.value}\t{note}"
            )
        for enrollment in await repository.waiting_enrollments(session, found.id, limit):
            due = f"{enrollment.due_at:%Y-%m-%d %H:%M}" if enrollment.due_at else "-"
            lines.append(
                f"{due}\t{enrollment.flow}\t{_step_key(enrollment)}\t{enrollment.email}"
                f"\twaiting\t{enrollment.waiting_for}"
            )
        return "\n".join(lines) or "nothing yet: no email has been due"

    _edit_flow(shop, listing, str)


def _step_key(enrollment: Any) -> str:
    step = enrollment.next_step
    return "-" if step is None else str(enrollment.steps[step].get("key", step + 1))


@flows_cli.command("preview")
def flows_preview(
    shop: ShopOption,
    flow: Annotated[str, typer.Argument(help=f"One of: {', '.join(FLOW_NAMES)}")],
    step: Annotated[int, typer.Option(help="Which step, counting from 1")],
    lang: Annotated[str, typer.Option(help="en, sv, de, nb, ru or is")] = "en",
    out: Annotated[
        Path | None, typer.Option(help="Write the HTML part here to open in a browser")
    ] = None,
) -> None:
    """Show a step's email as a customer would get it (subject and text; HTML to --out)."""

    async def show(session: Any, found: Shop) -> str:
        from flows.preview import preview

        message = await preview(session, found, flow, step, lang)
        html = message.get_body(preferencelist=("html",))
        text = message.get_body(preferencelist=("plain",))
        if out is not None and html is not None:
            out.write_text(str(html.get_content()))
        body = str(text.get_content()) if text is not None else ""
        return f"Subject: {message['Subject']}\nFrom: {message['From']}\n\n{body}"

    _edit_flow(shop, show, str)


@cli.command("api-token")
def api_token(
    shop: ShopOption,
    days: Annotated[int, typer.Option(help="How long the token is valid")] = 30,
) -> None:
    """Print a token for the JSON API of one store (Authorization: Bearer TOKEN)."""

    _edit_flow(shop, lambda session, found: _token(found, days), str)


async def _token(shop: Shop, days: int) -> str:
    from app.api.auth import issue_token

    return issue_token(shop, days)


@cli.command("admin-link")
def admin_link(shop: ShopOption) -> None:
    """Print a link that signs the merchant in to the admin (once, within 15 minutes; the
    session lasts 8 hours). For stores outside Shopify, where no Shopify admin signs them in."""

    async def link(session: Any, found: Shop) -> str:
        from app.api.auth import admin_login_link

        if found.uninstalled_at is not None:
            raise FlowSettingError(f"{found.domain} is uninstalled; connect it again first")
        return admin_login_link(found)

    _edit_flow(shop, link, str)


@flows_cli.command("winback-scan")
def flows_winback_scan(shop: ShopOption) -> None:
    """Run the daily win-back scan for one store now, with progress; prints who started."""

    async def scan() -> int:
        from arq import create_pool

        from flows import winback

        async with sessionmaker()() as session:
            found = await _shop(session, shop)
        assert found.id is not None
        redis = await create_pool(redis_settings(get_settings()))
        try:
            return await winback.scan_shop(
                found.id,
                utcnow(),
                redis,
                progress=lambda seen, started: typer.echo(
                    f"{seen} lapsed customers read, {started} started win-back"
                ),
            )
        finally:
            await redis.aclose()

    try:
        with embedded_redis(get_settings()):
            started = _run(scan)
    except FlowSettingError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"{started} customer(s) started win-back")


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


@inbox_cli.command("purge")
def inbox_purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing")
    ] = False,
) -> None:
    """Delete processed deliveries older than INBOX_KEEP_DAYS and failed ones older than
    INBOX_KEEP_FAILED_DAYS (the worker does it daily); unprocessed ones are kept."""
    from app.inbox import retention

    settings = get_settings()
    counted = _run(
        lambda: retention.purge(
            utcnow(),
            dry_run=dry_run,
            progress=lambda done: typer.echo(f"… {done} deleted so far"),
        )
    )
    handled, failed = counted[InboxStatus.HANDLED], counted[InboxStatus.FAILED]
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {handled + failed} inbox entries: {handled} processed over "
        f"{settings.inbox_keep_days} days old, {failed} failed over "
        f"{settings.inbox_keep_failed_days} days old"
    )


if __name__ == "__main__":
    main()
