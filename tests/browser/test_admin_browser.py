"""What a merchant sees and does in the admin, in Chromium against the live app: signed in
through the one-time link, switching a flow off and on with the keyboard alone, changing a
step's wait, previewing an email in Swedish, reading the overview after a recovered order, and
meeting a refused delay next to its field. What the page shows is checked against what was
stored."""

import asyncio
import re
from datetime import timedelta

import httpx
import pytest
from playwright.async_api import Locator, Page, expect
from sqlmodel import select

from app.analytics.models import Attribution
from app.api.auth import issue_token
from app.db import sessionmaker, utcnow
from app.mail.transport import SmtpTransport
from app.shops.models import Shop
from flows import repository as flows_repository
from integrations.shopify.standin import ShopifyStandin
from tests.browser.conftest import Admin
from tests.test_flows import (
    ADA,
    SWEATER,
    apply,
    checkout,
    now,
    only,
    open_shop,
    order,
    run,
    send_for,
    stored_flow,
)

HOUR = 3600


def step_form(page: Page, title: str) -> Locator:
    """A step of the flow editor: a form named by its heading ("2 Still there")."""
    return page.get_by_role("form", name=re.compile(rf"^\d+ {re.escape(title)}$"))


def flow_switch(page: Page, title: str) -> Locator:
    return page.get_by_role("button", name=f"{title} flow", exact=True)


async def api_step(server: httpx.AsyncClient, shop: Shop, flow: str, number: int) -> dict:
    """A step as the JSON API gives it to the shop."""
    response = await server.get(
        "/api/flows", headers={"Authorization": f"Bearer {issue_token(shop)}"}
    )
    assert response.status_code == 200, response.text
    (found,) = [f for f in response.json() if f["name"] == flow]
    return dict(found["steps"][number - 1])


# --- 1. switching a flow off and on, with the keyboard alone --------------------------------


async def test_a_flow_is_switched_off_and_on_from_the_flows_page_by_keyboard(
    admin: Admin, shop: Shop
) -> None:
    page = admin.page
    await admin.sign_in(shop)

    # From the overview to Flows: Tab to the navigation link, Enter.
    await admin.tab_to(page.get_by_role("navigation").get_by_role("link", name="Flows"))
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Flows")
    assert admin.path() == "/admin/flows"
    await admin.shot("flows")
    switch = flow_switch(page, "Abandoned cart")
    card = page.locator(".flow-card").filter(has=switch)
    await expect(switch).to_have_attribute("aria-pressed", "true")
    await expect(card.locator("[data-state-badge]")).to_have_text("Running")

    await admin.tab_to(switch)
    await page.keyboard.press("Space")

    await expect(switch).to_have_attribute("aria-pressed", "false")
    await expect(card.locator("[data-state-badge]")).to_have_text("Off")
    await expect(page.locator("#page-status")).to_have_text("abandoned cart is off.")
    await admin.shot("abandoned-cart-off")
    assert (await stored_flow(shop, "abandoned_cart")).enabled is False
    assert (await stored_flow(shop, "winback")).enabled is True  # the others untouched

    # The page says so after a reload too: it is stored, not just drawn.
    await admin.reload("flows-reloaded-off")
    await expect(flow_switch(page, "Abandoned cart")).to_have_attribute("aria-pressed", "false")

    await admin.tab_to(flow_switch(page, "Abandoned cart"))
    await page.keyboard.press("Enter")

    await expect(flow_switch(page, "Abandoned cart")).to_have_attribute("aria-pressed", "true")
    await expect(card.locator("[data-state-badge]")).to_have_text("Running")
    await admin.shot("abandoned-cart-on")
    assert (await stored_flow(shop, "abandoned_cart")).enabled is True


# --- 2. a step's wait -----------------------------------------------------------------------


async def test_a_steps_wait_is_changed_saved_and_shown_after_a_reload(
    admin: Admin, server: httpx.AsyncClient, shop: Shop
) -> None:
    page = admin.page
    await admin.sign_in(shop)
    await admin.visit("/admin/flows/abandoned_cart", "editor")
    step = step_form(page, "Still there")
    wait = step.get_by_label("Wait")
    await expect(wait).to_have_value("1d")
    before = await stored_flow(shop, "abandoned_cart")

    await wait.fill("36h")
    await step.get_by_role("button", name="Save step 2").click()

    await expect(step.get_by_role("status")).to_have_text("Step 2 saved.")
    await admin.shot("step-2-saved")
    stored = await stored_flow(shop, "abandoned_cart")
    assert stored.steps[1]["delay"] == 36 * HOUR
    assert stored.version == before.version + 1
    assert [s["delay"] for s in stored.steps[::2]] == [s["delay"] for s in before.steps[::2]]
    assert (await api_step(server, shop, "abandoned_cart", 2))["delay"] == "36h"

    await admin.reload("editor-reloaded")
    step = step_form(page, "Still there")
    await expect(step.get_by_label("Wait")).to_have_value("36h")
    await expect(step).to_contain_text("36h after")
    await expect(page.get_by_text(f"this is version {stored.version}")).to_be_visible()


# --- 3. the preview in Swedish --------------------------------------------------------------


async def test_the_preview_pane_shows_the_email_in_swedish(admin: Admin, shop: Shop) -> None:
    page = admin.page
    await admin.sign_in(shop)
    await admin.visit("/admin/flows/abandoned_cart", "editor-preview-english")
    preview = page.get_by_role("region", name="Preview")
    email = page.frame_locator(".preview-frame")
    await expect(email.locator("html")).to_have_attribute("lang", "en")

    controls = preview.locator("form[data-preview-controls]")
    await controls.get_by_label("Language").select_option(label="Swedish")

    await expect(page.locator(".preview-frame")).to_have_attribute(
        "title", "Email preview: step 1, Swedish"
    )
    await expect(email.locator("html")).to_have_attribute("lang", "sv")
    await expect(email.get_by_text("Tillbaka till varukorgen")).to_be_visible()  # the button
    await expect(email.get_by_text("Delsumma")).to_be_visible()
    await expect(email.get_by_text("Avregistrera dig")).to_be_visible()
    # The test email follows the preview's language.
    await expect(page.locator("#test-lang")).to_have_value("sv")
    await page.locator("#preview").scroll_into_view_if_needed()
    await admin.shot("editor-preview-swedish")

    await expect(
        preview.get_by_role("link", name="Open the preview in a new tab")
    ).to_have_attribute("href", re.compile(r"/steps/1/preview\?lang=sv&"))

    # Without the script, "Show" GETs the editor with the step and language: the same email.
    await admin.visit("/admin/flows/abandoned_cart?step=2&lang=sv", "editor-step-2-swedish")
    await expect(page.locator("#preview-lang")).to_have_value("sv")
    await expect(page.frame_locator(".preview-frame").locator("html")).to_have_attribute(
        "lang", "sv"
    )


# --- 4. the overview after a recovered order ------------------------------------------------


async def test_the_overview_shows_the_revenue_of_a_recovered_cart(
    admin: Admin, standin: ShopifyStandin, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    # A cart left two hours ago: its first reminder goes, Ada clicks it and orders.
    await apply(shop, checkout("recovered-1", ADA, updated_at=now() - timedelta(hours=2)))
    enrollment = await only("abandoned_cart", ADA)
    assert await run(enrollment, 0, SmtpTransport(smtp_url)) == "sent"
    async with sessionmaker()() as session:
        flows_repository.add_click(session, await send_for(enrollment, 0))
        await session.commit()
    placed = order("1001", ADA, [SWEATER], placed_at=now() + timedelta(seconds=1), total="120.00")
    await apply(shop, placed)
    async with sessionmaker()() as session:
        (credited,) = (await session.exec(select(Attribution))).all()
    assert credited.flow == "abandoned_cart" and credited.via == "click"
    # The overview counts up to now: let the order's second (just after the click) pass.
    await asyncio.sleep(max(0.0, (placed.placed_at - utcnow()).total_seconds()) + 0.05)

    page = admin.page
    await admin.sign_in(shop)  # lands on the overview

    metrics = page.locator("dl.metrics")
    await expect(metrics.locator("div").filter(has_text="Revenue from Rebound")).to_contain_text(
        "120.00 USD"
    )
    await expect(metrics.locator("div").filter(has_text="Orders")).to_contain_text("1")
    per_flow = page.get_by_role("region", name="Per flow, last 30 days")
    cart_row = per_flow.get_by_role("row").filter(
        has=page.get_by_role("rowheader", name="Abandoned cart")
    )
    await expect(cart_row.get_by_role("cell").first).to_have_text("120.00 USD")
    # Two charts: revenue per day and per flow, each an image with its own name.
    charts = page.locator(".chart-box svg[role=img]")
    await expect(charts).to_have_count(2)
    revenue_per_day = page.get_by_role("region", name="Revenue per day").locator("svg")
    await expect(revenue_per_day.locator("rect.bar[data-flow=abandoned_cart]")).to_have_count(1)
    await expect(revenue_per_day.locator("desc")).to_contain_text("120.00 USD in all")
    await expect(per_flow.locator("svg rect.bar[data-flow=abandoned_cart]")).to_be_visible()
    await admin.shot("overview-with-revenue")


# --- 5. a refused delay ---------------------------------------------------------------------


async def test_a_delay_that_is_not_one_is_refused_next_to_its_field_and_not_stored(
    admin: Admin, shop: Shop
) -> None:
    page = admin.page
    await admin.sign_in(shop)
    await admin.visit("/admin/flows/abandoned_cart", "editor")
    before = await stored_flow(shop, "abandoned_cart")
    step = step_form(page, "Still there")
    wait = step.get_by_label("Wait")

    for nonsense in ("soon", "-5m"):
        # By keyboard: Tab to the field, replace its text, Enter sends the form.
        await admin.tab_to(wait)
        await page.keyboard.press("Control+A")
        await page.keyboard.type(nonsense)
        await page.keyboard.press("Enter")

        error = step.get_by_role("alert").filter(has_text="is not a duration")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text(f"'{nonsense}' is not a duration like 0s, 90m, 24h")
        await expect(step.locator(".field-error")).to_have_count(1)  # the last one only
        await expect(wait).to_have_attribute("aria-invalid", "true")
        error_id = await error.get_attribute("id")
        described = (await wait.get_attribute("aria-describedby") or "").split()
        assert error_id in described and "s2-delay-hint" in described
        # What a screen reader reads with the field: its hint, then the error.
        description = await wait.evaluate(
            """field => field.getAttribute("aria-describedby").split(/\\s+/)
                .map(id => document.getElementById(id).textContent.trim()).join(" ")"""
        )
        assert description.startswith("After the cart's last activity") and nonsense in description
        await expect(wait).to_be_focused()  # back on the field to fix it
        # The error sits with its field, not somewhere else on the page.
        assert await wait.locator("xpath=..").get_by_role("alert").count() == 1
        await admin.shot(f"refused-{nonsense}")
        stored = await stored_flow(shop, "abandoned_cart")
        assert (stored.version, stored.steps) == (before.version, before.steps)

    await admin.reload("editor-after-refusals")
    await expect(step_form(page, "Still there").get_by_label("Wait")).to_have_value("1d")
    await expect(page.get_by_role("alert").filter(has_text="duration")).to_have_count(0)


# --- keyboard focus ---------------------------------------------------------------------------


@pytest.mark.parametrize("control", ["flow switch", "save button"])
async def test_the_keyboard_focus_stays_on_the_control_that_was_pressed(
    admin: Admin, shop: Shop, control: str
) -> None:
    page = admin.page
    await admin.sign_in(shop)
    if control == "flow switch":
        await admin.visit("/admin/flows", "flows")
        pressed = flow_switch(page, "Win-back")
        await admin.tab_to(pressed)
        await page.keyboard.press("Space")
        await expect(pressed).to_have_attribute("aria-pressed", "false")
    else:
        await admin.visit("/admin/flows/abandoned_cart", "editor")
        step = step_form(page, "Still there")
        await step.get_by_label("Wait").fill("2d")
        pressed = step.get_by_role("button", name="Save step 2")
        await admin.tab_to(pressed)
        await page.keyboard.press("Enter")
        await expect(step.get_by_role("status")).to_have_text("Step 2 saved.")
    await admin.shot(f"after-{control}")

    await expect(pressed).to_be_focused(timeout=2_000)


# --- 6. every page of the navigation, as a new merchant first meets it ------------------------


async def test_every_page_of_the_navigation_opens_with_its_heading_and_no_script_error(
    admin: Admin, shop: Shop
) -> None:
    page = admin.page
    await admin.sign_in(shop)
    links = page.get_by_role("navigation").get_by_role("link")
    names = [name.strip() for name in await links.all_inner_texts()]
    assert names == ["Overview", "Flows", "A/B tests", "Activity", "Settings", "Privacy"]

    for name in names:
        await page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert admin.path().startswith("/admin"), page.url
        await admin.shot(name)

    assert admin.problems == []


# --- 7. win-back's offers per segment, and signing out -----------------------------------------


async def test_a_segments_offer_is_saved_and_a_refused_one_is_named_next_to_its_field(
    admin: Admin, shop: Shop
) -> None:
    page = admin.page
    await admin.sign_in(shop)
    await admin.visit("/admin/flows/winback", "winback-editor")
    step = step_form(page, "We miss you")

    await step.get_by_label("Top customers").fill("25%")
    await step.get_by_label("One-time buyers").fill("")
    await step.get_by_role("button", name="Save step 1").click()
    await expect(step.get_by_role("status")).to_have_text("Step 1 saved.")
    stored = await stored_flow(shop, "winback")
    offers = stored.steps[0]["offers"]
    assert offers["top"]["value"] == "25" and offers["one_time"] is None
    assert offers["regular"]["value"] == "15"  # not sent: unchanged

    regular = step.get_by_label("Regular customers")
    await regular.fill("lots")
    await step.get_by_role("button", name="Save step 1").click()
    error = regular.locator("xpath=..").get_by_role("alert")
    await expect(error).to_contain_text("'lots'")
    await expect(regular).to_have_attribute("aria-invalid", "true")
    described = (await regular.get_attribute("aria-describedby") or "").split()
    assert described == ["s1-offers-hint", await error.get_attribute("id")]
    await admin.shot("segment-offer-refused")
    assert (await stored_flow(shop, "winback")).version == stored.version

    await admin.reload("winback-after-save")
    await expect(step_form(page, "We miss you").get_by_label("Top customers")).to_have_value("25%")


async def test_signing_out_ends_the_session_even_for_a_copied_cookie(
    admin: Admin, shop: Shop, server: httpx.AsyncClient
) -> None:
    page = admin.page
    await admin.sign_in(shop)
    (copied,) = [c for c in await page.context.cookies() if c["name"] == "rebound_admin"]

    await page.get_by_role("button", name="Sign out").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "You have signed out of Rebound."
    )
    await admin.shot("signed-out")
    assert [c for c in await page.context.cookies() if c["name"] == "rebound_admin"] == []
    again = await server.get("/admin", headers={"Cookie": f"rebound_admin={copied['value']}"})
    assert again.status_code == 401 and "not signed in" in again.text
