"""Delivery through the providers, DKIM, and bounces: Postmark's and Amazon SES's HTTP APIs (local
stand-ins built from their documentation), DKIM signatures checked with dkimpy, the bounce and
complaint webhooks into the suppression list, and each shop's own mail transport."""

import asyncio
import base64
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosmtplib
import dkim
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from sqlmodel import select

from app import security
from app.commerce.events import Customer
from app.db import sessionmaker
from app.mail import render
from app.mail import transport as transport_module
from app.mail.models import Suppression
from app.mail.repository import add_suppression, opted_out
from app.mail.sigv4 import signed_headers
from app.mail.transport import (
    DeliveryError,
    OutboxTransport,
    PermanentDeliveryError,
    PostmarkTransport,
    SesTransport,
    SmtpTransport,
    UncertainDelivery,
    close_transports,
    shop_domain_from_tag,
    shop_tag,
    transport_for,
    transport_for_shop,
    transport_from_url,
    wire_bytes,
)
from app.privacy import repository as privacy
from app.queue import Jobs
from app.settings import Settings, get_settings
from app.shops import service as shops_service
from app.shops.models import Shop
from flows import engine
from flows.models import Enrollment
from integrations.local_server import serve_app
from integrations.shopify import webhooks
from tests.conftest import SHOP_DOMAIN, _free_port
from tests.mail_standins import (
    SIGNATURE_MISMATCH,
    PostmarkStandin,
    SesStandin,
    SnsStandin,
    postmark_bounce,
    postmark_complaint,
    postmark_subscription_change,
    ses_bounce,
    ses_complaint,
)
from tests.shopify import fixture

CUSTOMER = "jane.doe@example.com"
WEBHOOK_USER, WEBHOOK_PASSWORD = "postmark", "hook-password-0123456789"


class Capture:
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[EmailMessage, str]] = []

    async def deliver(self, message: EmailMessage, *, shop_domain: str) -> None:
        self.messages.append((message, shop_domain))


class RawMailbox:
    """An SMTP server's handler that keeps the bytes exactly as they arrived."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.raw.append(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


@pytest.fixture
def raw_smtp() -> Iterator[tuple[RawMailbox, str]]:
    box = RawMailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield box, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


@pytest.fixture
async def postmark(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PostmarkStandin]:
    standin = PostmarkStandin()
    async with serve_app(standin.app()) as origin:
        monkeypatch.setattr(get_settings(), "postmark_api_origin", origin)
        yield standin


@pytest.fixture
async def ses(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SesStandin]:
    standin = SesStandin()
    async with serve_app(standin.app()) as origin:
        monkeypatch.setattr(get_settings(), "ses_api_origin", origin)
        yield standin


@pytest.fixture
async def sns(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SnsStandin]:
    standin = SnsStandin()
    async with serve_app(standin.app()) as origin:
        standin.origin = origin
        monkeypatch.setattr(get_settings(), "sns_cert_origin", origin)
        monkeypatch.setattr(get_settings(), "sns_topic_arns", f"{standin.topic_arn}, other")
        yield standin


@pytest.fixture
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = SecretStr(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}")
    monkeypatch.setattr(get_settings(), "postmark_webhook_secret", secret)


@pytest.fixture
def dkim_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A DKIM key in the settings; returns the DNS TXT record that publishes it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    settings = get_settings()
    monkeypatch.setattr(settings, "dkim_private_key", SecretStr(pem))
    monkeypatch.setattr(settings, "dkim_selector", "rebound2026")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def dns(record: bytes, name: bytes = b"rebound2026._domainkey.rebound.test.") -> Any:
    def lookup(asked: bytes, timeout: int = 5) -> bytes | None:
        return record if asked == name else None

    return lookup


async def first_reminder(shop: Shop, transport: Any) -> str:
    """Run the first abandoned-cart reminder of "Fern & Moss" through the flow engine."""
    payload = fixture("checkouts_create")
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, updated_at=now)
    assert shop.id is not None
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        stored.name = "Fern & Moss"
        for event in webhooks.events("checkouts/create", payload):
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()
        enrollment = (await session.exec(select(Enrollment))).one()
        assert enrollment.id is not None
        return await engine.run_step(session, Jobs(), transport, enrollment.id, 0)


async def composed(shop: Shop) -> EmailMessage:
    """The first abandoned-cart reminder as the engine hands it over, finished."""
    capture = Capture()
    assert await first_reminder(shop, capture) == "sent"
    message = capture.messages[0][0]
    return render.finish(message, "Fern & Moss", shop.domain)


def signed_header_names(raw: bytes) -> list[str]:
    parsed = message_from_bytes(raw, policy=policy.default)
    tags = dict(
        part.strip().split("=", 1) for part in str(parsed["DKIM-Signature"]).split(";") if part
    )
    return [name.strip() for name in "".join(tags["h"].split()).split(":")]


async def suppressions() -> list[Suppression]:
    async with sessionmaker()() as session:
        return list((await session.exec(select(Suppression))).all())


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- AWS Signature Version 4 ---------------------------------------------------------------------


def test_signature_version_4_matches_the_example_in_the_aws_documentation() -> None:
    headers = signed_headers(
        "GET",
        "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        b"",
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        service="iam",
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )

    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )


# --- Postmark ------------------------------------------------------------------------------------


async def test_postmark_gets_the_message_as_json_with_every_header_and_the_shop(
    shop: Shop, postmark: PostmarkStandin
) -> None:
    message = await composed(shop)

    await PostmarkTransport(postmark.server_token).deliver(message, shop_domain=SHOP_DOMAIN)

    (sent,) = postmark.received
    assert postmark.headers[0]["host"] == "api.postmarkapp.com"
    assert postmark.headers[0]["accept"] == "application/json"
    assert sent["From"] == "Fern & Moss <shop@rebound.test>"
    assert sent["To"] == CUSTOMER
    assert sent["Subject"] == str(message["Subject"])
    assert sent["TextBody"] == message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert sent["HtmlBody"] == message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert sent["MessageStream"] == "outbound"
    assert sent["Metadata"] == {"shop": SHOP_DOMAIN}
    # Postmark's own tracking stays off: Rebound's follows the shop's switch
    assert sent["TrackOpens"] is False and sent["TrackLinks"] == "None"
    headers = {h["Name"]: h["Value"] for h in sent["Headers"]}
    assert headers["List-Unsubscribe"] == str(message["List-Unsubscribe"])
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Id"] == '"Fern & Moss" <rebound-test-myshopify-com.rebound.test>'
    assert headers["Message-ID"] == str(message["Message-ID"])
    assert not {"From", "To", "Subject", "Content-Type", "MIME-Version"} & set(headers)


async def test_postmark_keeps_its_connection_between_messages(
    shop: Shop, postmark: PostmarkStandin
) -> None:
    transport, message = PostmarkTransport(postmark.server_token), await composed(shop)
    for _ in range(3):
        await transport.deliver(message, shop_domain=SHOP_DOMAIN)

    assert len(postmark.received) == 3
    assert len(set(postmark.peers)) == 1  # one TCP connection for the three
    await close_transports(transport)
    await transport.deliver(message, shop_domain=SHOP_DOMAIN)
    assert len(set(postmark.peers)) == 2  # closed at shutdown: a new one after


async def test_postmark_stream_comes_from_the_stream_header(postmark: PostmarkStandin) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@rebound.test", CUSTOMER, "Hi"
    message["X-Rebound-Stream"] = "broadcast"
    message.set_content("Hello")

    await PostmarkTransport(postmark.server_token).deliver(message, shop_domain=SHOP_DOMAIN)

    (sent,) = postmark.received
    assert sent["MessageStream"] == "broadcast" and "HtmlBody" not in sent
    assert "X-Rebound-Stream" not in {h["Name"] for h in sent["Headers"]}


async def test_postmark_inactive_recipient_is_a_permanent_refusal(
    shop: Shop, postmark: PostmarkStandin
) -> None:
    postmark.inactive.add(CUSTOMER)

    with pytest.raises(PermanentDeliveryError, match="406"):
        await PostmarkTransport(postmark.server_token).deliver(
            await composed(shop), shop_domain=SHOP_DOMAIN
        )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"ErrorCode": 0, "Message": "Internal Server Error"}),
        (429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}),
        (422, {"ErrorCode": 412, "Message": "Your account is pending approval."}),
    ],
)
async def test_postmark_server_errors_are_retried_not_permanent(
    shop: Shop, postmark: PostmarkStandin, status: int, body: dict[str, Any]
) -> None:
    postmark.failures.append((status, body))
    message = await composed(shop)

    with pytest.raises(DeliveryError, match=str(status)) as raised:
        await PostmarkTransport(postmark.server_token).deliver(message, shop_domain=SHOP_DOMAIN)

    assert not isinstance(raised.value, PermanentDeliveryError)
    await PostmarkTransport(postmark.server_token).deliver(message, shop_domain=SHOP_DOMAIN)
    assert len(postmark.received) == 1


async def test_postmark_with_a_wrong_token_is_an_error_to_retry(
    shop: Shop, postmark: PostmarkStandin
) -> None:
    with pytest.raises(DeliveryError, match="401"):
        await PostmarkTransport("wrong").deliver(await composed(shop), shop_domain=SHOP_DOMAIN)
    assert postmark.received == []


# --- Amazon SES ----------------------------------------------------------------------------------


def ses_transport(standin: SesStandin, secret: str | None = None) -> SesTransport:
    ((key, real_secret),) = standin.credentials.items()
    return SesTransport(key, secret or real_secret, standin.region)


async def test_ses_gets_the_raw_message_signed_with_signature_version_4(
    shop: Shop, ses: SesStandin
) -> None:
    message = await composed(shop)

    await ses_transport(ses).deliver(message, shop_domain=SHOP_DOMAIN)

    (sent,) = ses.received
    assert sent["host"] == "email.eu-west-1.amazonaws.com"
    # The message itself, its 8bit text parts made quoted-printable as SES asks.
    assert sent["raw"].isascii()
    arrived = message_from_bytes(sent["raw"], policy=policy.default)
    for kind in ("plain", "html"):
        got = arrived.get_body((kind,)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
        assert got == message.get_body((kind,)).get_content()  # type: ignore[union-attr]
    assert sent["request"]["EmailTags"] == [{"Name": "shop", "Value": shop_tag(SHOP_DOMAIN)}]
    arrived = message_from_bytes(sent["raw"], policy=policy.default)
    assert arrived["To"] == CUSTOMER and arrived["Subject"] == message["Subject"]
    assert arrived["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_ses_gets_8bit_text_as_quoted_printable_and_the_same_words(
    shop: Shop, ses: SesStandin
) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "shop@rebound.test", CUSTOMER, "Hej"
    message.set_content("Hej Åsa, din varukorg väntar på dig.")
    assert message["Content-Transfer-Encoding"] == "8bit"

    await ses_transport(ses).deliver(message, shop_domain=SHOP_DOMAIN)

    (sent,) = ses.received
    assert sent["raw"].isascii()
    arrived = message_from_bytes(sent["raw"], policy=policy.default)
    assert arrived["Content-Transfer-Encoding"] == "quoted-printable"
    assert arrived.get_content().strip() == "Hej Åsa, din varukorg väntar på dig."
    assert message["Content-Transfer-Encoding"] == "8bit"  # the caller's message is untouched


async def test_ses_refuses_a_wrong_signature_and_nothing_is_sent(
    shop: Shop, ses: SesStandin
) -> None:
    transport = ses_transport(ses, secret="not-the-secret-key")

    with pytest.raises(DeliveryError, match="SignatureDoesNotMatch") as raised:
        await transport.deliver(await composed(shop), shop_domain=SHOP_DOMAIN)

    assert SIGNATURE_MISMATCH in str(raised.value)
    assert not isinstance(raised.value, PermanentDeliveryError)
    assert ses.received == [] and ses.refusals[0][0] == 403


async def test_ses_rejecting_the_recipient_is_permanent_and_throttling_is_not(
    shop: Shop, ses: SesStandin
) -> None:
    message = await composed(shop)
    ses.unverified.add(CUSTOMER)
    with pytest.raises(PermanentDeliveryError, match="MessageRejected"):
        await ses_transport(ses).deliver(message, shop_domain=SHOP_DOMAIN)

    ses.unverified.clear()
    ses.failures.append((429, "TooManyRequestsException", "Too many requests."))
    with pytest.raises(DeliveryError) as raised:
        await ses_transport(ses).deliver(message, shop_domain=SHOP_DOMAIN)
    assert not isinstance(raised.value, PermanentDeliveryError)

    ses.failures.append((500, "InternalFailure", "We encountered an internal error."))
    with pytest.raises(DeliveryError, match="500"):
        await ses_transport(ses).deliver(message, shop_domain=SHOP_DOMAIN)
    assert ses.received == []


def test_shop_tags_are_valid_ses_tag_values_and_name_the_shop_again() -> None:
    for domain in (SHOP_DOMAIN, "store.example.com:8443", "shop-1.example.org"):
        tag = shop_tag(domain)
        assert tag.replace("_", "").replace("-", "").isalnum()
        assert shop_domain_from_tag(tag) == domain


# --- DKIM ----------------------------------------------------------------------------------------


async def test_dkim_signs_a_composed_message_and_dkimpy_verifies_it(
    shop: Shop, dkim_key: bytes
) -> None:
    message = await composed(shop)
    raw = wire_bytes(message)

    assert dkim.verify(raw, dnsfunc=dns(dkim_key))
    signed = signed_header_names(raw)
    for name in ("from", "to", "subject", "date", "message-id", "mime-version", "content-type"):
        assert name in signed
    for name in ("list-unsubscribe", "list-unsubscribe-post", "list-id"):
        assert signed.count(name) == 2  # once more than present: none can be added
    assert "c=relaxed/relaxed" in "".join(str(message["DKIM-Signature"]).split())
    assert "d=rebound.test" in str(message["DKIM-Signature"])


async def test_dkim_fails_when_a_signed_header_changes_or_is_added(
    shop: Shop, dkim_key: bytes
) -> None:
    message = await composed(shop)
    raw = wire_bytes(message)

    changed = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"X-Gone: 1")
    assert not dkim.verify(changed, dnsfunc=dns(dkim_key))
    added = b"List-Unsubscribe: <https://evil.example/u>\r\n" + raw
    assert not dkim.verify(added, dnsfunc=dns(dkim_key))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = other_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert not dkim.verify(raw, dnsfunc=dns(b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)))


async def test_dkim_signature_survives_smtp_and_ses_byte_for_byte(
    shop: Shop, dkim_key: bytes, raw_smtp: tuple[RawMailbox, str], ses: SesStandin
) -> None:
    message = await composed(shop)
    box, url = raw_smtp

    await SmtpTransport(url).deliver(message, shop_domain=SHOP_DOMAIN)
    await ses_transport(ses).deliver(message, shop_domain=SHOP_DOMAIN)

    (over_smtp,) = box.raw
    assert dkim.verify(over_smtp, dnsfunc=dns(dkim_key))
    assert dkim.verify(ses.received[0]["raw"], dnsfunc=dns(dkim_key))
    # Sent as composed: the https unsubscribe URL is not folded into encoded words.
    assert b"List-Unsubscribe: <https://rebound.test/u/" in over_smtp


async def test_dkim_key_from_a_file_and_its_own_domain(
    shop: Shop, dkim_key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    assert settings.dkim_private_key is not None
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(settings.dkim_private_key.get_secret_value())
    monkeypatch.setattr(settings, "dkim_private_key", SecretStr(str(key_file)))
    monkeypatch.setattr(settings, "dkim_domain", "mail.fernandmoss.example")

    raw = wire_bytes(await composed(shop))

    name = b"rebound2026._domainkey.mail.fernandmoss.example."
    assert dkim.verify(raw, dnsfunc=dns(dkim_key, name))


async def test_without_a_dkim_key_finish_adds_only_list_id(shop: Shop) -> None:
    message = await composed(shop)
    message = render.finish(message, 'Evil "Shop"\r\nBcc: victim@example.com', SHOP_DOMAIN)

    assert message["DKIM-Signature"] is None
    assert message.get_all("List-Id") == [
        '"Evil \\"Shop\\" Bcc: victim@example.com" <rebound-test-myshopify-com.rebound.test>'
    ]
    assert message["Bcc"] is None
    parsed = message_from_bytes(wire_bytes(message), policy=policy.default)
    assert parsed["Bcc"] is None
    assert render.finish(message, "Café Größe", SHOP_DOMAIN)["List-Id"] == (
        "Café Größe <rebound-test-myshopify-com.rebound.test>"
    )


# --- Postmark bounce webhook ---------------------------------------------------------------------


@pytest.mark.usefixtures("webhook_secret")
async def test_postmark_bounce_with_good_credentials_suppresses_the_address(
    shop: Shop, server: httpx.AsyncClient
) -> None:
    bounce = postmark_bounce("Jane.Doe@Example.com", SHOP_DOMAIN)
    response = await server.post(
        "/webhooks/postmark", json=bounce, headers=basic(WEBHOOK_USER, WEBHOOK_PASSWORD)
    )

    assert response.status_code == 200, response.text
    (stored,) = await suppressions()
    assert (stored.shop_id, stored.email, stored.reason) == (shop.id, CUSTOMER, "bounce")
    assert stored.detail and stored.detail.startswith("HardBounce")
    async with sessionmaker()() as session:
        assert shop.id is not None
        assert (await opted_out(session, shop.id, CUSTOMER))[0]


@pytest.mark.usefixtures("webhook_secret")
@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(WEBHOOK_USER, "wrong-password"),
        basic("someone", WEBHOOK_PASSWORD),
        {"Authorization": "Basic not base64!"},
        {"Authorization": "Bearer " + WEBHOOK_PASSWORD},
    ],
)
async def test_postmark_bounce_with_bad_credentials_is_refused_and_stores_nothing(
    shop: Shop, server: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await server.post(
        "/webhooks/postmark", json=postmark_bounce(CUSTOMER, SHOP_DOMAIN), headers=headers
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert await suppressions() == []


async def test_postmark_webhook_refuses_everything_without_a_secret(
    shop: Shop, server: httpx.AsyncClient
) -> None:
    response = await server.post(
        "/webhooks/postmark",
        json=postmark_bounce(CUSTOMER, SHOP_DOMAIN),
        headers=basic(WEBHOOK_USER, WEBHOOK_PASSWORD),
    )
    assert response.status_code == 401 and await suppressions() == []


@pytest.mark.usefixtures("webhook_secret")
async def test_postmark_complaints_suppress_and_soft_bounces_or_strangers_do_not(
    shop: Shop, server: httpx.AsyncClient
) -> None:
    records = [
        postmark_bounce("soft@example.com", SHOP_DOMAIN, bounce_type="SoftBounce", inactive=False),
        postmark_bounce("stranger@example.com", "unknown-shop.myshopify.com"),
        postmark_bounce("nometa@example.com", None),
        {"RecordType": "Delivery", "Email": "x@example.com", "Metadata": {"shop": SHOP_DOMAIN}},
        postmark_complaint(CUSTOMER, SHOP_DOMAIN),
        postmark_subscription_change("left@example.com", SHOP_DOMAIN, "ManualSuppression"),
        postmark_subscription_change("back@example.com", SHOP_DOMAIN, None),
        postmark_subscription_change("broadcast@example.com", SHOP_DOMAIN, "HardBounce"),
    ]
    for record in records:
        response = await server.post(
            "/webhooks/postmark", json=record, headers=basic(WEBHOOK_USER, WEBHOOK_PASSWORD)
        )
        assert response.status_code == 200, response.text

    assert sorted((s.email, s.reason) for s in await suppressions()) == [
        ("broadcast@example.com", "bounce"),
        (CUSTOMER, "complaint"),
    ]


# --- SES through SNS -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_signed_ses_bounce_suppresses_every_permanently_bounced_address(
    shop: Shop, server: httpx.AsyncClient, sns: SnsStandin, version: str
) -> None:
    event = ses_bounce([CUSTOMER, "other@example.com"], shop_tag(SHOP_DOMAIN))

    response = await sns.deliver(
        server.base_url.join("/webhooks/ses"), sns.notification(event, version=version)
    )

    assert response.status_code == 200, response.text
    stored = await suppressions()
    assert sorted((s.email, s.reason) for s in stored) == [
        ("jane.doe@example.com", "bounce"),
        ("other@example.com", "bounce"),
    ]
    assert all(s.shop_id == shop.id for s in stored)


async def test_ses_complaints_suppress_and_transient_bounces_do_not(
    shop: Shop, server: httpx.AsyncClient, sns: SnsStandin
) -> None:
    endpoint = server.base_url.join("/webhooks/ses")
    tag = shop_tag(SHOP_DOMAIN)
    for event in (
        ses_bounce(["soft@example.com"], tag, bounce_type="Transient"),
        ses_bounce(["untagged@example.com"], None, event=False),
        ses_bounce(["stranger@example.com"], shop_tag("unknown.myshopify.com")),
        ses_complaint(CUSTOMER, tag),
    ):
        response = await sns.deliver(endpoint, sns.notification(event, subject="SES event"))
        assert response.status_code == 200, response.text

    assert [(s.email, s.reason, s.detail) for s in await suppressions()] == [
        (CUSTOMER, "complaint", "abuse")
    ]
    assert sns.certificate_fetches == 1  # kept after the first message


async def test_a_tampered_sns_message_is_refused_and_stores_nothing(
    shop: Shop, server: httpx.AsyncClient, sns: SnsStandin
) -> None:
    document = sns.notification(ses_bounce(["someone@example.com"], shop_tag(SHOP_DOMAIN)))
    tampered = {**document, "Message": document["Message"].replace("someone", "jane.doe")}
    unsigned = {**document, "Signature": base64.b64encode(b"\0" * 256).decode()}
    downgraded = {**document, "SignatureVersion": "0"}

    for forged in (tampered, unsigned, downgraded):
        response = await sns.deliver(server.base_url.join("/webhooks/ses"), forged)
        assert response.status_code == 403

    assert await suppressions() == []


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://evil.example/SimpleNotificationService-1.pem",
        "http://127.0.0.1:9/SimpleNotificationService-1.pem",
    ],
)
async def test_a_signing_certificate_off_sns_is_never_fetched(
    shop: Shop, server: httpx.AsyncClient, sns: SnsStandin, cert_url: str
) -> None:
    document = sns.notification(ses_bounce([CUSTOMER], shop_tag(SHOP_DOMAIN)))

    response = await sns.deliver(
        server.base_url.join("/webhooks/ses"), {**document, "SigningCertURL": cert_url}
    )

    assert response.status_code == 403
    assert sns.certificate_fetches == 0 and await suppressions() == []


async def test_without_the_stand_in_only_https_sns_hosts_of_the_topics_region_are_trusted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.mail.bounces import _from_sns

    monkeypatch.setattr(get_settings(), "sns_cert_origin", None)
    good = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
    assert _from_sns(good, "eu-west-1")
    for bad in (
        good.replace("https", "http"),
        good.replace("eu-west-1", "us-east-1"),
        "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
        "https://user@sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
    ):
        assert not _from_sns(bad, "eu-west-1"), bad


async def test_messages_from_a_topic_not_configured_are_refused(
    shop: Shop, server: httpx.AsyncClient, sns: SnsStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "sns_topic_arns", None)
    document = sns.notification(ses_bounce([CUSTOMER], shop_tag(SHOP_DOMAIN)))

    response = await sns.deliver(server.base_url.join("/webhooks/ses"), document)

    assert response.status_code == 403 and await suppressions() == []


async def test_a_subscription_confirmation_gets_its_subscribe_url(
    server: httpx.AsyncClient, sns: SnsStandin
) -> None:
    response = await sns.deliver(
        server.base_url.join("/webhooks/ses"), sns.subscription_confirmation()
    )

    assert response.status_code == 200, response.text
    assert len(sns.confirmed) == 1 and sns.confirmed[0].startswith(sns.topic_arn)


async def test_a_subscription_confirmation_pointing_elsewhere_is_not_followed(
    server: httpx.AsyncClient, sns: SnsStandin
) -> None:
    document = sns.subscription_confirmation()
    document = sns.sign(
        {
            key: document[key]
            for key in ("Type", "MessageId", "Token", "TopicArn", "Message", "Timestamp")
        }
        | {"SubscribeURL": "https://evil.example/?Action=ConfirmSubscription"},
        "2",
    )

    response = await sns.deliver(server.base_url.join("/webhooks/ses"), document)

    assert response.status_code == 403 and sns.confirmed == []


# --- Choosing the transport ----------------------------------------------------------------------


def test_mail_transport_urls_name_each_transport(tmp_path: Path) -> None:
    settings = Settings(rebound_home=tmp_path)

    postmark = transport_from_url("postmark://server-token-1@", settings)
    assert isinstance(postmark, PostmarkTransport) and postmark.server_token == "server-token-1"
    ses = transport_from_url("ses://AKIAEXAMPLE:abc%2Fdef%2Bg@eu-north-1", settings)
    assert isinstance(ses, SesTransport)
    assert (ses.access_key, ses.secret_key, ses.region) == (
        "AKIAEXAMPLE",
        "abc/def+g",
        "eu-north-1",
    )
    assert ses.url == "https://email.eu-north-1.amazonaws.com/v2/email/outbound-emails"
    configured = transport_from_url("ses://K:S@us-east-1?configuration_set=rebound", settings)
    assert isinstance(configured, SesTransport) and configured.configuration_set == "rebound"
    smtps = transport_from_url("smtps://user:pa%40ss@mail.example.com", settings)
    assert isinstance(smtps, SmtpTransport) and smtps.implicit_tls and smtps.password == "pa@ss"
    assert smtps.port == 465
    assert isinstance(transport_from_url("outbox", settings), OutboxTransport)
    for wrong in (
        "postmark://",
        "ses://s3cr3t@eu-west-1",
        "ses://KEY:s3cr3t@",
        "http://s3cr3t@example.com",
        "mailgun://s3cr3t@",
    ):
        with pytest.raises(ValueError) as raised:
            transport_from_url(wrong, settings)
        assert "s3cr3t" not in str(raised.value)  # URLs hold secrets: errors never repeat them


def test_mail_transport_wins_over_smtp_url_which_still_works(tmp_path: Path) -> None:
    smtp = Settings(rebound_home=tmp_path, smtp_url=SecretStr("smtp://u:p@mail.example.com:587"))
    chosen = transport_for(smtp)
    assert isinstance(chosen, SmtpTransport) and (chosen.hostname, chosen.port) == (
        "mail.example.com",
        587,
    )
    both = Settings(
        rebound_home=tmp_path,
        smtp_url=SecretStr("smtp://mail.example.com"),
        mail_transport=SecretStr("postmark://tok@"),
    )
    assert isinstance(transport_for(both), PostmarkTransport)
    assert isinstance(transport_for(Settings(rebound_home=tmp_path)), OutboxTransport)


async def test_a_shop_with_its_own_transport_sends_through_it(
    shop: Shop, postmark: PostmarkStandin
) -> None:
    default = Capture()
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        assert transport_for_shop(stored, default) is default
        kind = shops_service.set_mail_transport(stored, f"postmark://{postmark.server_token}@")
        await session.commit()
        assert kind == "postmark" and stored.mail_transport_encrypted
        assert postmark.server_token not in stored.mail_transport_encrypted
        assert security.decrypt(stored.mail_transport_encrypted).startswith("postmark://")

    assert await first_reminder(shop, default) == "sent"

    (sent,) = postmark.received
    assert sent["To"] == CUSTOMER and default.messages == []

    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        with pytest.raises(shops_service.SendingRuleError):
            shops_service.set_mail_transport(stored, "mailgun://key@")
        assert stored.mail_transport_encrypted  # a refused edit changes nothing
        assert shops_service.set_mail_transport(stored, "default") == "default"
        assert transport_for_shop(stored, default) is default


async def test_shops_set_mail_transport_from_the_command_line(shop: Shop) -> None:
    from tests.test_cli import rebound

    code, output = await rebound(
        "shops", "set", "--shop", SHOP_DOMAIN, "--mail-transport", "ses://AKIA1:s3cret@eu-west-1"
    )
    assert code == 0, output
    assert "mail transport ses" in output and "s3cret" not in output
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None and stored.mail_transport_encrypted
        assert isinstance(transport_for_shop(stored, Capture()), SesTransport)

    code, output = await rebound("shops", "set", "--shop", SHOP_DOMAIN, "--mail-transport", "x")
    assert code != 0 and "mail transport must be" in output


# --- The suppression list ------------------------------------------------------------------------


async def test_suppressions_keep_the_first_reason_and_go_with_a_redaction(shop: Shop) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        await add_suppression(session, shop.id, " Jane.Doe@example.com ", "smtp_5xx", "550 5.1.1")
        await add_suppression(session, shop.id, CUSTOMER, "complaint", "abuse")
        await add_suppression(session, shop.id, "", "bounce", None)
        await session.commit()
        assert (await opted_out(session, shop.id, "JANE.DOE@example.com"))[0]
        assert not (await opted_out(session, shop.id, "john@example.com"))[0]
    assert [(s.email, s.reason) for s in await suppressions()] == [(CUSTOMER, "smtp_5xx")]

    async with sessionmaker()() as session:
        await privacy.redact_customer(session, shop.id, Customer(CUSTOMER, None, None))
        await session.commit()
    assert await suppressions() == []


# --- SMTP over TLS, with a login -------------------------------------------------------------

SMTP_USER, SMTP_PASSWORD = "shop@rebound.test", "relay-password-0123"


@dataclass(frozen=True)
class Certificate:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost: its own CA."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rebound test relay")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate = Certificate(folder / "relay.pem", folder / "relay.key")
    certificate.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certificate.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate


@dataclass
class Relay:
    """An SMTP server that checks a login: it records every AUTH and whether TLS was on."""

    messages: list[bytes] = field(default_factory=list)
    logins: list[tuple[str, str, bool]] = field(default_factory=list)  # mechanism, user, tls

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        encrypted = server.transport.get_extra_info("sslcontext") is not None
        user, password = data.login.decode(), data.password.decode()
        self.logins.append((mechanism, user, encrypted))
        # handled=False: aiosmtpd answers a failure with its own 535.
        return AuthResult(success=(user, password) == (SMTP_USER, SMTP_PASSWORD), handled=False)


@contextlib.contextmanager
def relay(**options: Any) -> Iterator[tuple[Relay, int]]:
    box = Relay()
    controller = Controller(
        box, hostname="127.0.0.1", port=_free_port(), authenticator=box.authenticate, **options
    )
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


def plain_message() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = "shop@rebound.test", CUSTOMER
    message["Subject"] = "Your cart"
    message.set_content("Still thinking it over?")
    return message


def login_url(scheme: str, port: int, password: str = SMTP_PASSWORD) -> str:
    return f"{scheme}://{quote(SMTP_USER, safe='')}:{password}@127.0.0.1:{port}"


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_starttls_then_login_delivers_and_the_login_goes_over_tls_only(
    certificate: Certificate, tmp_path: Path, mechanism: str
) -> None:
    other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[mechanism]
    with relay(
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        auth_exclude_mechanism=[other],
    ) as (box, port):
        settings = Settings(rebound_home=tmp_path, smtp_ca_file=certificate.cert_file)
        transport = transport_from_url(login_url("smtp", port), settings)
        await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN)

    assert box.logins == [(mechanism, SMTP_USER, True)]
    (raw,) = box.messages
    assert b"Still thinking it over?" in raw


async def test_a_wrong_smtp_password_is_an_error_to_retry_that_says_so(
    certificate: Certificate, tmp_path: Path
) -> None:
    with relay(tls_context=certificate.server_context(), require_starttls=True) as (box, port):
        settings = Settings(rebound_home=tmp_path, smtp_ca_file=certificate.cert_file)
        transport = transport_from_url(login_url("smtp", port, "wrong-password"), settings)
        with pytest.raises(DeliveryError) as raised:
            await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN)

    # The shop's login to fix, not the customer's address: retried, never a bounce.
    assert not isinstance(raised.value, PermanentDeliveryError)
    assert "user name or password" in str(raised.value) and "535" in str(raised.value)
    assert "wrong-password" not in str(raised.value)
    # aiosmtplib tries each mechanism the server offers before giving up; all of them over TLS.
    assert {tls for _, _, tls in box.logins} == {True} and box.messages == []


async def test_credentials_never_go_to_a_server_that_does_not_offer_starttls(
    tmp_path: Path,
) -> None:
    """A connection stripped of STARTTLS (the server offers AUTH in the clear) gets no login."""
    with relay(auth_require_tls=False) as (box, port):
        transport = transport_from_url(login_url("smtp", port), Settings(rebound_home=tmp_path))
        with pytest.raises(aiosmtplib.SMTPException, match="STARTTLS"):
            await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN)

    assert box.logins == [] and box.messages == []


async def test_implicit_tls_with_a_login_delivers_when_its_ca_is_trusted(
    certificate: Certificate, tmp_path: Path
) -> None:
    # aiosmtpd cannot tell an implicit TLS connection is encrypted: it is told AUTH may be
    # offered, and the relay records for itself whether the login came over TLS.
    with relay(ssl_context=certificate.server_context(), auth_require_tls=False) as (box, port):
        settings = Settings(rebound_home=tmp_path, smtp_ca_file=certificate.cert_file)
        await transport_from_url(login_url("smtps", port), settings).deliver(
            plain_message(), shop_domain=SHOP_DOMAIN
        )
        # Without SMTP_CA_FILE the self-signed certificate is not trusted: nothing is sent.
        untrusting = transport_from_url(login_url("smtps", port), Settings(rebound_home=tmp_path))
        with pytest.raises(aiosmtplib.SMTPConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.deliver(plain_message(), shop_domain=SHOP_DOMAIN)

    assert [(user, tls) for _, user, tls in box.logins] == [(SMTP_USER, True)]
    assert len(box.messages) == 1


def test_smtp_url_takes_smtp_ca_file_too(certificate: Certificate, tmp_path: Path) -> None:
    settings = Settings(
        rebound_home=tmp_path,
        smtp_url=SecretStr("smtps://u:p@mail.example.com"),
        smtp_ca_file=certificate.cert_file,
    )
    chosen = transport_for(settings)
    assert isinstance(chosen, SmtpTransport) and chosen.ca_file == certificate.cert_file
    assert Settings(rebound_home=tmp_path, smtp_ca_file="").smtp_ca_file is None


@dataclass
class Sessions:
    """An SMTP server that records which connection carried each message, and can answer the
    second MAIL FROM of a connection with 421, as a server closing an idle connection does."""

    messages: list[tuple[int, bytes]] = field(default_factory=list)  # connection, message
    closing_after_one: bool = False

    async def handle_MAIL(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.closing_after_one and any(peer == id(session) for peer, _ in self.messages):
            return "421 4.4.2 Idle too long, closing connection"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((id(session), envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def sessions_server(box: Sessions) -> Iterator[str]:
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{controller.port}"
    finally:
        controller.stop()


async def test_one_smtp_connection_carries_message_after_message() -> None:
    box = Sessions()
    with sessions_server(box) as url:
        transport = SmtpTransport(url)
        for _ in range(3):
            await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN)
        await transport.aclose()

    assert len(box.messages) == 3
    assert len({connection for connection, _ in box.messages}) == 1


async def test_messages_at_once_get_a_connection_each_and_reuse_them() -> None:
    box = Sessions()
    with sessions_server(box) as url:
        transport = SmtpTransport(url)
        for _ in range(2):
            await asyncio.gather(
                *(transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN) for _ in range(4))
            )
        await transport.aclose()

    assert len(box.messages) == 8
    assert len({connection for connection, _ in box.messages}) == 4


async def test_a_connection_is_replaced_after_its_share_of_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "POOL_MESSAGES", 2)
    box = Sessions()
    with sessions_server(box) as url:
        transport = SmtpTransport(url)
        for _ in range(5):
            await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN)

    connections = [connection for connection, _ in box.messages]
    assert len(connections) == 5 and len(set(connections)) == 3


async def test_a_kept_connection_the_server_closed_is_replaced_and_the_message_sent_once() -> None:
    box = Sessions(closing_after_one=True)
    handoffs: list[str] = []

    async def handoff() -> None:
        handoffs.append("handed off")

    with sessions_server(box) as url:
        transport = SmtpTransport(url)
        await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN, handoff=handoff)
        await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN, handoff=handoff)

    connections = [connection for connection, _ in box.messages]
    assert len(connections) == 2 and len(set(connections)) == 2
    assert handoffs == ["handed off", "handed off"]  # the refused try handed nothing over


async def test_a_connection_broken_during_data_is_never_retried() -> None:
    """After the hand-off, a kept connection failing is uncertain, not stale: no second try."""

    class BreakingData(Sessions):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            if self.messages:
                server.transport.close()
                return "250 never read"
            return await super().handle_DATA(server, session, envelope)

    box = BreakingData()
    with sessions_server(box) as url:
        transport = SmtpTransport(url)
        await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN)
        with pytest.raises(UncertainDelivery):
            await transport.deliver(plain_message(), shop_domain=SHOP_DOMAIN)

    assert len(box.messages) == 1


async def test_a_shops_own_smtp_keeps_its_connection_until_the_setting_changes(
    shop: Shop,
) -> None:
    box = Sessions()
    with sessions_server(box) as url:
        async with sessionmaker()() as session:
            stored = await session.get(Shop, shop.id)
            assert stored is not None
            shops_service.set_mail_transport(stored, url)
            own = transport_for_shop(stored, Capture())
            for _ in range(2):
                await transport_for_shop(stored, Capture()).deliver(
                    plain_message(), shop_domain=SHOP_DOMAIN
                )
            assert transport_for_shop(stored, Capture()) is own
            shops_service.set_mail_transport(stored, url)  # saved again: a new transport
            renewed = transport_for_shop(stored, Capture())
            await renewed.deliver(plain_message(), shop_domain=SHOP_DOMAIN)
        await close_transports(Capture())

    assert renewed is not own
    connections = [connection for connection, _ in box.messages]
    assert len(connections) == 3 and len(set(connections)) == 2


async def test_a_shops_replaced_api_transport_closes_its_client_after_a_grace(
    shop: Shop, postmark: PostmarkStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "RETIRE_AFTER", 0.01)
    message = await composed(shop)
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        shops_service.set_mail_transport(stored, f"postmark://{postmark.server_token}@")
        own = transport_for_shop(stored, Capture())
        await own.deliver(message, shop_domain=SHOP_DOMAIN)
        assert isinstance(own, PostmarkTransport) and own._http is not None
        kept = own._http

        shops_service.set_mail_transport(stored, f"postmark://{postmark.server_token}@")
        renewed = transport_for_shop(stored, Capture())
        assert not kept.is_closed  # a message may still be on its way through it
        await asyncio.sleep(0.1)
        await renewed.deliver(message, shop_domain=SHOP_DOMAIN)
    await close_transports(Capture())

    assert kept.is_closed and own._http is None
    assert len(postmark.received) == 2 and len(set(postmark.peers)) == 2
