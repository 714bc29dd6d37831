"""Click and open tracking in a composed email. Links to other sites become signed redirects
through Rebound (`/c/<token>`) with UTM parameters; Rebound's own links already record their
click. The open pixel is recorded and never used to decide anything: Apple Mail Privacy
Protection fetches every image, so opens are inflated."""

import html
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from app import security
from app.settings import get_settings

CLICK = "click"
OPEN = "open"
HREF = re.compile(r'href="(https?://[^"]+)"')
TEXT_URL = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True)
class Campaign:
    """Which email a link is in: its send (for the click) and its flow and step (for UTM)."""

    shop_id: int
    send_id: int
    flow: str
    step: str


def with_utm(url: str, campaign: Campaign) -> str:
    """The destination with utm_source/medium/campaign/content, keeping UTM the link has."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.startswith("utm_") for key, _ in query):
        return url
    query += [
        ("utm_source", "rebound"),
        ("utm_medium", "email"),
        ("utm_campaign", campaign.flow),
        ("utm_content", campaign.step),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def click_url(url: str, campaign: Campaign) -> str:
    token = security.sign(
        CLICK, {"shop": campaign.shop_id, "send": campaign.send_id, "to": with_utm(url, campaign)}
    )
    return f"{get_settings().public_url}/c/{token}"


def open_url(campaign: Campaign) -> str:
    token = security.sign(OPEN, {"shop": campaign.shop_id, "send": campaign.send_id})
    return f"{get_settings().public_url}/o/{token}.gif"


def _external(url: str) -> bool:
    return not url.startswith(get_settings().public_url + "/")


def track_html(body: str, campaign: Campaign) -> str:
    def rewrite(match: re.Match[str]) -> str:
        url = html.unescape(match.group(1))
        if not _external(url):
            return match.group(0)
        return f'href="{html.escape(click_url(url, campaign))}"'

    tracked = HREF.sub(rewrite, body)
    pixel = (
        f'<img src="{open_url(campaign)}" width="1" height="1" alt="" '
        'style="display:block;border:0;">'
    )
    return tracked.replace("</body>", f"{pixel}</body>", 1)


def track_text(body: str, campaign: Campaign) -> str:
    def rewrite(match: re.Match[str]) -> str:
        url = match.group(0)
        return click_url(url, campaign) if _external(url) else url

    return TEXT_URL.sub(rewrite, body)


def read_click(token: str) -> tuple[int, int, str] | None:
    """(shop id, send id, destination) from a click token Rebound signed; None otherwise."""
    payload = security.unsign(CLICK, token)
    if not payload:
        return None
    shop, send, destination = payload.get("shop"), payload.get("send"), payload.get("to")
    if not (isinstance(shop, int) and isinstance(send, int) and isinstance(destination, str)):
        return None
    if urlsplit(destination).scheme not in ("http", "https"):
        return None
    return shop, send, destination


def read_open(token: str) -> tuple[int, int] | None:
    payload = security.unsign(OPEN, token.removesuffix(".gif"))
    if not payload:
        return None
    shop, send = payload.get("shop"), payload.get("send")
    return (shop, send) if isinstance(shop, int) and isinstance(send, int) else None
