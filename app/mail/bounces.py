"""Bounce and complaint webhooks from the mail providers: Postmark's, and Amazon SES's through
SNS. Each verified hard bounce or complaint puts the address on its shop's suppression list.

Postmark authenticates with the HTTP Basic credentials of the webhook URL. SNS signs every
message with a certificate that Rebound fetches from SNS itself (https, `sns.<region>.
amazonaws.com`) and keeps; only topics named in SNS_TOPIC_ARNS are believed, since anyone can
point a topic of their own at this endpoint. Anything unverified is refused before it is read."""

import base64
import binascii
import hmac
import json
import logging
import re
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import SessionDep
from app.inbox.endpoints import _read_body
from app.mail.repository import SuppressionReason, add_suppression
from app.mail.transport import shop_domain_from_tag
from app.settings import get_settings
from app.shops import repository as shops

log = logging.getLogger("rebound.mail")
router = APIRouter(tags=["webhooks"])

# Postmark bounce types that mean the address will never take mail (its "Bounce types").
POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
# The fields SNS signs, in the order of its "Verifying the signatures" page.
SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SNS_SIGNED["UnsubscribeConfirmation"] = SNS_SIGNED["SubscriptionConfirmation"]
SNS_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
TOPIC_ARN = re.compile(r"^arn:aws:sns:([a-z]{2}(?:-[a-z0-9]+)+):\d{12}:[\w-]{1,256}$")
MAX_CACHED_CERTIFICATES = 32

# Signing certificate URL -> its key and the end of its validity.
_certificates: dict[str, tuple[rsa.RSAPublicKey, datetime]] = {}


# --- Postmark ------------------------------------------------------------------------------------


@router.post("/webhooks/postmark", response_class=JSONResponse)
async def receive_postmark(request: Request, session: SessionDep) -> dict[str, str]:
    if not _postmark_credentials(request.headers.get("authorization", "")):
        raise HTTPException(
            401,
            "webhook credentials could not be verified",
            headers={"WWW-Authenticate": 'Basic realm="rebound"'},
        )
    record = _json_object(await _read_body(request))
    found = _postmark_suppression(record)
    if found is None:
        return {"status": "ignored"}
    reason, detail = found
    metadata = record.get("Metadata")
    domain = metadata.get("shop") if isinstance(metadata, dict) else None
    email = record.get("Email") or record.get("Recipient")
    if not isinstance(email, str):
        raise HTTPException(400, "the record has no Email")
    return await _suppress(session, domain, [(email, reason, detail)], "postmark")


def _postmark_credentials(authorization: str) -> bool:
    """HTTP Basic credentials against POSTMARK_WEBHOOK_SECRET (`user:password`, or the
    password alone), in constant time. Without the setting nothing is accepted."""
    secret = get_settings().postmark_webhook_secret
    scheme, _, encoded = authorization.partition(" ")
    if secret is None or scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = secret.get_secret_value().encode()
    if b":" not in expected:
        given = given.partition(b":")[2]
    return hmac.compare_digest(given, expected)


def _postmark_suppression(record: dict[str, Any]) -> tuple[SuppressionReason, str] | None:
    kind = record.get("RecordType")
    if kind == "SubscriptionChange":
        # Broadcast streams report hard bounces and complaints only this way. A manual
        # suppression (Postmark's own unsubscribe, or the merchant) and reactivations are not
        # bounces.
        reason = record.get("SuppressionReason")
        if record.get("SuppressSending") is not True:
            return None
        if reason == "HardBounce":
            return "bounce", "HardBounce: suppressed by Postmark"
        if reason == "SpamComplaint":
            return "complaint", "SpamComplaint: suppressed by Postmark"
        return None
    bounce_type = str(record.get("Type") or "")
    detail = f"{bounce_type}: {record.get('Description') or record.get('Details') or ''}"
    if kind == "SpamComplaint" or bounce_type == "SpamComplaint":
        return "complaint", detail
    # Inactive: Postmark itself will refuse this address from now on.
    if kind == "Bounce" and (bounce_type in POSTMARK_HARD or record.get("Inactive") is True):
        return "bounce", detail
    return None


# --- Amazon SES through SNS ----------------------------------------------------------------------


@router.post("/webhooks/ses", response_class=JSONResponse)
async def receive_ses(request: Request, session: SessionDep) -> dict[str, str]:
    message = _json_object(await _read_body(request))
    topic = message.get("TopicArn")
    matched = TOPIC_ARN.match(topic) if isinstance(topic, str) else None
    if matched is None or topic not in get_settings().sns_topics:
        raise HTTPException(403, "not from an SNS topic that Rebound listens to (SNS_TOPIC_ARNS)")
    region = matched.group(1)
    if not await _sns_signature_verified(message, region):
        raise HTTPException(403, "SNS signature could not be verified")

    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        return await _confirm_subscription(message, region)
    if kind != "Notification":
        return {"status": "ignored"}
    try:
        event = json.loads(message["Message"])
    except ValueError as exc:
        raise HTTPException(400, f"the notification's Message is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise HTTPException(400, "the notification's Message is not a JSON object")
    tag, found = _ses_suppressions(event)
    if not found:
        return {"status": "ignored"}
    return await _suppress(session, shop_domain_from_tag(tag) if tag else None, found, "ses")


async def _confirm_subscription(message: dict[str, Any], region: str) -> dict[str, str]:
    url = message.get("SubscribeURL")
    if not isinstance(url, str) or not _from_sns(url, region):
        raise HTTPException(403, "SubscribeURL is not an SNS address")
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.get(url)
    except httpx.HTTPError as exc:
        raise HTTPException(502, f"SNS could not be reached to confirm: {exc}") from exc
    if response.status_code != 200:
        raise HTTPException(502, f"SNS refused the confirmation: HTTP {response.status_code}")
    log.info("confirmed the SNS subscription to %s", message["TopicArn"])
    return {"status": "subscribed"}


def _ses_suppressions(
    event: dict[str, Any],
) -> tuple[str | None, list[tuple[str, SuppressionReason, str]]]:
    """The shop tag and the addresses to suppress of an SES notification (`notificationType`)
    or event (`eventType`, from a configuration set). Transient bounces suppress nothing."""
    kind = event.get("notificationType") or event.get("eventType")
    values = _object(_object(event.get("mail")).get("tags")).get("shop")
    tag = values[0] if isinstance(values, list) and values and isinstance(values[0], str) else None
    found: list[tuple[Any, SuppressionReason, str]] = []
    if kind == "Bounce":
        bounce = _object(event.get("bounce"))
        if bounce.get("bounceType") == "Permanent":
            for recipient in _list(bounce.get("bouncedRecipients")):
                code = recipient.get("diagnosticCode") or recipient.get("status") or ""
                detail = f"{bounce.get('bounceSubType')}: {code}"
                found.append((recipient.get("emailAddress"), "bounce", detail))
    elif kind == "Complaint":
        complaint = _object(event.get("complaint"))
        feedback = str(complaint.get("complaintFeedbackType") or "complaint")
        for recipient in _list(complaint.get("complainedRecipients")):
            found.append((recipient.get("emailAddress"), "complaint", feedback))
    return tag, [(e, r, d) for e, r, d in found if isinstance(e, str) and e]


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


async def _sns_signature_verified(message: dict[str, Any], region: str) -> bool:
    signed = SNS_SIGNED.get(message.get("Type"))  # type: ignore[arg-type]
    algorithm = SNS_HASHES.get(str(message.get("SignatureVersion")))
    cert_url = message.get("SigningCertURL")
    if signed is None or algorithm is None or not isinstance(cert_url, str):
        return False
    if not _from_sns(cert_url, region) or not urlsplit(cert_url).path.endswith(".pem"):
        return False
    text = ""
    for field in signed:
        value = message.get(field)
        if field == "Subject" and value is None:
            continue
        if not isinstance(value, str):
            return False
        text += f"{field}\n{value}\n"
    try:
        signature = base64.b64decode(str(message.get("Signature")), validate=True)
    except (binascii.Error, ValueError):
        return False
    key = await _certificate_key(cert_url)
    try:
        key.verify(signature, text.encode(), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        return False
    return True


def _from_sns(url: str, region: str) -> bool:
    """An https URL on `sns.<region>.amazonaws.com` (the topic's region), or on SNS_CERT_ORIGIN
    when that is set (a local stand-in)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return False
    try:
        port = parts.port
    except ValueError:
        return False
    override = get_settings().sns_cert_origin
    if override:
        allowed = urlsplit(override)
        return (parts.scheme, parts.hostname, port) == (
            allowed.scheme,
            allowed.hostname,
            allowed.port,
        )
    return (
        parts.scheme == "https"
        and parts.hostname == f"sns.{region}.amazonaws.com"
        and port in (None, 443)
    )


async def _certificate_key(url: str) -> rsa.RSAPublicKey:
    """The RSA public key of the signing certificate at `url`, fetched once and kept while the
    certificate is valid."""
    now = datetime.now(UTC)
    if url in _certificates and now <= _certificates[url][1]:
        return _certificates[url][0]
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.get(url)
    except httpx.HTTPError as exc:
        # 503: SNS delivers again later, when the certificate may be reachable.
        raise HTTPException(
            503, f"the SNS signing certificate could not be fetched: {exc}"
        ) from exc
    if response.status_code != 200:
        raise HTTPException(403, "the SNS signing certificate could not be fetched")
    try:
        certificate = x509.load_pem_x509_certificate(response.content)
    except ValueError as exc:
        raise HTTPException(403, "the SNS signing certificate is not a PEM certificate") from exc
    key = certificate.public_key()
    if not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
        raise HTTPException(403, "the SNS signing certificate is not valid now")
    if not isinstance(key, rsa.RSAPublicKey):
        raise HTTPException(403, "the SNS signing certificate has no RSA key")
    _certificates.pop(url, None)
    if len(_certificates) >= MAX_CACHED_CERTIFICATES:
        _certificates.pop(next(iter(_certificates)))
    _certificates[url] = (key, certificate.not_valid_after_utc)
    return key


# --- both ----------------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"webhook body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise HTTPException(400, "webhook body is not a JSON object")
    return value


async def _suppress(
    session: AsyncSession,
    domain: Any,
    found: list[tuple[str, SuppressionReason, str]],
    provider: str,
) -> dict[str, str]:
    shop = await shops.find_by_domain(session, domain) if isinstance(domain, str) else None
    if shop is None or shop.id is None:
        # 200: the provider would only retry a notification no shop here will ever claim.
        log.info("%s reported a bounce or complaint for no known shop", provider)
        return {"status": "unknown shop"}
    for email, reason, detail in found:
        _, address = parseaddr(email)
        await add_suppression(session, shop.id, address or email, reason, detail)
    await session.commit()
    reasons = sorted({reason for _, reason, _ in found})
    log.info(
        "%s: %s address(es) of shop %s suppressed (%s)",
        provider,
        len(found),
        shop.domain,
        ", ".join(reasons),
    )
    return {"status": "suppressed"}
