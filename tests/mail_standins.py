"""Local stand-ins of the mail providers' remote parts, built from their documentation:

- Postmark's Email API (`POST /email`: X-Postmark-Server-Token, the JSON message, its answers
  and API error codes: 401; 422 with ErrorCode 300 invalid request, 406 inactive recipient),
  and its bounce and spam complaint webhooks, posted with the URL's Basic credentials.
- Amazon SES API v2 `SendEmail` (`POST /v2/email/outbound-emails`), which checks AWS Signature
  Version 4 itself, written here from the AWS documentation apart from `app.mail.sigv4`, and
  answers errors in the REST-JSON shape (`X-Amzn-ErrorType` header, `{"message": …}` body).
- Amazon SNS's side of an HTTPS subscription: a signing certificate at SigningCertURL, the
  SubscribeURL that confirms a subscription, and notifications signed with SignatureVersion 1
  (SHA1withRSA) or 2 (SHA256withRSA) over the documented string to sign.

Each is a Starlette app; `serve_app` runs it with uvicorn on a free local port."""

import base64
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# --- Postmark ------------------------------------------------------------------------------------


@dataclass
class PostmarkStandin:
    server_token: str = "postmark-server-token"
    # Addresses Postmark has marked inactive (hard bounces, complaints, manual suppressions).
    inactive: set[str] = field(default_factory=set)
    # (status, body) answered to the next requests instead of sending.
    failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # The (host, port) each request came from: one port for several, one kept connection.
    peers: list[tuple[str, int]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/email", self.email, methods=["POST"])])

    async def email(self, request: Request) -> Response:
        self.headers.append(dict(request.headers))
        if request.client is not None:
            self.peers.append((request.client.host, request.client.port))
        if request.headers.get("x-postmark-server-token") != self.server_token:
            return JSONResponse(
                {"ErrorCode": 10, "Message": "The Server Token you provided in the "
                 "X-Postmark-Server-Token request header was invalid."},
                status_code=401,
            )  # fmt: skip
        if "application/json" not in request.headers.get("content-type", ""):
            return _postmark_error(409, "JSON request required.")
        try:
            message = json.loads(await request.body())
        except ValueError:
            return _postmark_error(402, "Invalid JSON.")
        if self.failures:
            status, body = self.failures.pop(0)
            return JSONResponse(body, status_code=status)
        for name in ("From", "To", "Subject"):
            if not message.get(name):
                return _postmark_error(300, f"Invalid email request. '{name}' is required.")
        if not message.get("TextBody") and not message.get("HtmlBody"):
            return _postmark_error(300, "Provide either email TextBody or HtmlBody or both.")
        to = [a.strip() for a in message["To"].split(",")]
        if any("@" not in re.sub(r".*<(.*)>", r"\1", a) for a in to):
            return _postmark_error(300, f"Error parsing 'To': Illegal email address '{to[0]}'.")
        inactive = [a for a in to if re.sub(r".*<(.*)>", r"\1", a).lower() in self.inactive]
        if inactive:
            return _postmark_error(
                406,
                "You tried to send to recipient(s) that have been marked as inactive. Found "
                f"inactive addresses: {', '.join(inactive)}. Inactive recipients are ones that "
                "have generated a hard bounce, a spam complaint, or a manual suppression.",
            )
        self.received.append(message)
        return JSONResponse(
            {
                "To": message["To"],
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": "OK",
            }
        )


def _postmark_error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"ErrorCode": code, "Message": message}, status_code=422)


def postmark_bounce(
    email: str, shop: str | None, *, bounce_type: str = "HardBounce", inactive: bool = True
) -> dict[str, Any]:
    """A bounce webhook record as Postmark posts it."""
    return {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": bounce_type,
        "TypeCode": {"HardBounce": 1, "Transient": 2, "SoftBounce": 4096}.get(bounce_type, 1),
        "Name": "Hard bounce" if bounce_type == "HardBounce" else bounce_type,
        "Tag": "",
        "MessageID": str(uuid.uuid4()),
        "Metadata": {"shop": shop} if shop else {},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, "
        "mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email,
        "From": "shop@rebound.test",
        "BouncedAt": datetime.now(UTC).isoformat(),
        "DumpAvailable": True,
        "Inactive": inactive,
        "CanActivate": True,
        "Subject": "Your cart is waiting",
        "Content": "",
    }


def postmark_complaint(email: str, shop: str) -> dict[str, Any]:
    """A spam complaint webhook record as Postmark posts it."""
    return {
        "RecordType": "SpamComplaint",
        "MessageStream": "outbound",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "",
        "MessageID": str(uuid.uuid4()),
        "Metadata": {"shop": shop},
        "ServerID": 1234,
        "Description": "",
        "Details": "Test spam complaint details",
        "Email": email,
        "From": "shop@rebound.test",
        "BouncedAt": datetime.now(UTC).isoformat(),
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "Your cart is waiting",
        "Content": "<Abuse report dump>",
    }


def postmark_subscription_change(email: str, shop: str, reason: str | None) -> dict[str, Any]:
    """A subscription change webhook record: Postmark's suppression list of a stream changed."""
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": str(uuid.uuid4()) if reason == "HardBounce" else None,
        "ServerID": 123456,
        "MessageStream": "broadcast",
        "ChangedAt": datetime.now(UTC).isoformat(),
        "Recipient": email,
        "Origin": "Recipient",
        "SuppressSending": reason is not None,
        "SuppressionReason": reason,
        "Tag": None,
        "Metadata": {"shop": shop} if reason else {},
    }


# --- Amazon SES v2 -------------------------------------------------------------------------------

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)


@dataclass
class SesStandin:
    region: str = "eu-west-1"
    credentials: dict[str, str] = field(
        default_factory=lambda: {"AKIAREBOUNDTEST00001": "rebound/test+secret/key0123456789abcd"}
    )
    # Recipients the (sandboxed) account may not send to.
    unverified: set[str] = field(default_factory=set)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/v2/email/outbound-emails", self.send_email, methods=["POST"])]
        )

    async def send_email(self, request: Request) -> Response:
        body = await request.body()
        refused = self._authenticate(request, body)
        if refused is not None:
            self.refusals.append((refused.status_code, refused.headers["x-amzn-errortype"]))
            return refused
        if self.failures:
            status, code, message = self.failures.pop(0)
            return _aws_error(status, code, message)
        try:
            document = json.loads(body)
            raw = base64.b64decode(document["Content"]["Raw"]["Data"], validate=True)
        except (ValueError, KeyError, TypeError):
            return _aws_error(400, "BadRequestException", "Content.Raw.Data must be base64")
        for tag in document.get("EmailTags", []):
            for part in (tag.get("Name", ""), tag.get("Value", "")):
                if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", part):
                    return _aws_error(400, "BadRequestException", f"Invalid tag: {part!r}")
        to = re.findall(rb"^To: *(.+?)\r?$", raw, re.MULTILINE | re.IGNORECASE)
        recipients = [t.decode().strip().lower() for t in to]
        blocked = [r for r in recipients if r in self.unverified]
        if blocked:
            return _aws_error(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check in "
                f"region {self.region.upper()}: {', '.join(blocked)}",
            )
        self.received.append({"raw": raw, "request": document, "host": request.headers["host"]})
        return JSONResponse({"MessageId": f"0102018c{uuid.uuid4().hex}-000000"})

    def _authenticate(self, request: Request, body: bytes) -> Response | None:
        """Signature Version 4, as the AWS documentation describes checking it."""
        authorization = request.headers.get("authorization", "")
        found = re.fullmatch(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
            r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            authorization,
        )
        if found is None:
            return _aws_error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        key_id, day, region, service, signed, signature = found.groups()
        secret = self.credentials.get(key_id)
        if secret is None:
            return _aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        host = request.headers.get("host", "")
        if service != "ses" or region != self.region or host != f"email.{region}.amazonaws.com":
            return _aws_error(
                403,
                "InvalidSignatureException",
                "Credential should be scoped to a valid region and service.",
            )  # noqa: E501
        stamp = request.headers.get("x-amz-date", "")
        try:
            moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return _aws_error(
                403, "IncompleteSignatureException", "Date must be in ISO-8601 'basic format'."
            )  # noqa: E501
        if abs(datetime.now(UTC) - moment) > timedelta(minutes=15) or stamp[:8] != day:
            return _aws_error(403, "InvalidSignatureException", f"Signature expired: {stamp}")
        names = signed.split(";")
        if "host" not in names or names != sorted(names):
            return _aws_error(403, "IncompleteSignatureException", "'Host' must be a signed header")  # noqa: E501
        headers = "".join(
            f"{name}:{re.sub(' +', ' ', request.headers.get(name, '').strip())}\n" for name in names
        )
        query = "&".join(
            sorted(
                f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                for k, v in request.query_params.multi_items()
            )
        )
        canonical = (
            f"{request.method}\n{quote(request.url.path, safe='/-_.~')}\n{query}\n{headers}\n"
            f"{signed}\n{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{day}/{region}/{service}/aws4_request\n"
            + hashlib.sha256(canonical.encode()).hexdigest()
        )
        key = ("AWS4" + secret).encode()
        for part in (day, region, service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        expected = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
        if not hmac.compare_digest(expected, signature):
            return _aws_error(403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)
        return None


def _aws_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"message": message},
        status_code=status,
        headers={
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.coral.service/",
            "x-amzn-RequestId": str(uuid.uuid4()),
        },
    )


# --- Amazon SNS ----------------------------------------------------------------------------------


class SnsStandin:
    """SNS for one topic: its signing certificate, subscription confirmations, and signed
    deliveries to an HTTPS endpoint (here the app's URL)."""

    def __init__(self, region: str = "eu-west-1", account: str = "123456789012") -> None:
        self.region = region
        self.topic_arn = f"arn:aws:sns:{region}:{account}:rebound-ses-feedback"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_name = f"SimpleNotificationService-{uuid.uuid4().hex}.pem"
        self.origin = ""  # set once served
        self.certificate_fetches = 0
        self.tokens: set[str] = set()
        self.confirmed: list[str] = []

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"/{self.cert_name}", self.serve_certificate),
                Route("/", self.confirm_subscription),
            ]
        )

    async def serve_certificate(self, request: Request) -> Response:
        self.certificate_fetches += 1
        pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        return Response(pem, media_type="application/x-x509-ca-cert")

    async def confirm_subscription(self, request: Request) -> Response:
        params = request.query_params
        if (
            params.get("Action") != "ConfirmSubscription"
            or params.get("TopicArn") != self.topic_arn
        ):
            return _sns_error(400, "InvalidParameter", "Invalid parameter: TopicArn")
        token = params.get("Token", "")
        if token not in self.tokens:
            return _sns_error(400, "InvalidParameter", "Invalid token")
        subscription = f"{self.topic_arn}:{uuid.uuid4()}"
        self.confirmed.append(subscription)
        return Response(
            '<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
            f"<ConfirmSubscriptionResult><SubscriptionArn>{subscription}</SubscriptionArn>"
            "</ConfirmSubscriptionResult><ResponseMetadata>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</ConfirmSubscriptionResponse>",
            media_type="text/xml",
        )

    @property
    def cert_url(self) -> str:
        return f"{self.origin}/{self.cert_name}"

    def subscription_confirmation(self, version: str = "1") -> dict[str, Any]:
        token = uuid.uuid4().hex * 2
        self.tokens.add(token)
        query = urlencode(
            {"Action": "ConfirmSubscription", "TopicArn": self.topic_arn, "Token": token}
        )
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": token,
                "TopicArn": self.topic_arn,
                "Message": f"You have chosen to subscribe to the topic {self.topic_arn}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message.",
                "SubscribeURL": f"{self.origin}/?{query}",
                "Timestamp": _timestamp(),
            },
            version,
        )

    def notification(
        self, message: dict[str, Any], *, subject: str | None = None, version: str = "1"
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": self.topic_arn,
            "Message": json.dumps(message),
            "Timestamp": _timestamp(),
            "UnsubscribeURL": f"{self.origin}/?Action=Unsubscribe&SubscriptionArn="
            f"{self.topic_arn}:{uuid.uuid4()}",
        }
        if subject is not None:
            document["Subject"] = subject
        return self.sign(document, version)

    def sign(self, document: dict[str, Any], version: str) -> dict[str, Any]:
        """SignatureVersion 1 (SHA1withRSA) or 2 (SHA256withRSA) over the fields SNS signs for
        the message's type, each as `name\\nvalue\\n`, in byte order of their names."""
        names = (
            ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
            if document["Type"] == "Notification"
            else ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        )
        text = "".join(f"{n}\n{document[n]}\n" for n in names if n in document)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {
            **document,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": self.cert_url,
        }

    async def deliver(self, endpoint: str | httpx.URL, document: dict[str, Any]) -> httpx.Response:
        """POST the message to an HTTP(S) subscription, with SNS's headers."""
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.post(
                endpoint,
                content=json.dumps(document).encode(),
                headers={
                    "Content-Type": "text/plain; charset=UTF-8",
                    "User-Agent": "Amazon Simple Notification Service Agent",
                    "x-amz-sns-message-type": document["Type"],
                    "x-amz-sns-message-id": document["MessageId"],
                    "x-amz-sns-topic-arn": document["TopicArn"],
                },
            )


def _sns_error(status: int, code: str, message: str) -> Response:
    return Response(
        f'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender'
        f"</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>",
        status_code=status,
        media_type="text/xml",
    )


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ses_bounce(
    emails: list[str], shop_tag: str | None, *, bounce_type: str = "Permanent", event: bool = True
) -> dict[str, Any]:
    """An SES bounce as published to SNS: an event from a configuration set (`eventType`, with
    the message's tags) or an identity notification (`notificationType`, no tags)."""
    mail: dict[str, Any] = {
        "timestamp": _timestamp(),
        "source": "Fern & Moss <shop@rebound.test>",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/rebound.test",
        "sendingAccountId": "123456789012",
        "messageId": f"0102018c{uuid.uuid4().hex}-000000",
        "destination": emails,
    }
    if event and shop_tag:
        mail["tags"] = {"ses:configuration-set": ["rebound"], "shop": [shop_tag]}
    return {
        "eventType" if event else "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": email,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
                for email in emails
            ],
            "timestamp": _timestamp(),
            "feedbackId": f"0102018c{uuid.uuid4().hex}-000000",
            "reportingMTA": "dsn; a1-2.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": mail,
    }


def ses_complaint(email: str, shop_tag: str) -> dict[str, Any]:
    return {
        "eventType": "Complaint",
        "complaint": {
            "feedbackId": f"0102018c{uuid.uuid4().hex}-000000",
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": email}],
            "timestamp": _timestamp(),
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complaintFeedbackType": "abuse",
            "arrivalDate": _timestamp(),
        },
        "mail": {
            "timestamp": _timestamp(),
            "source": "shop@rebound.test",
            "messageId": f"0102018c{uuid.uuid4().hex}-000000",
            "destination": [email],
            "tags": {"ses:configuration-set": ["rebound"], "shop": [shop_tag]},
        },
    }
