"""Typed settings, read once from environment variables (documented in README.md)."""

import os
import secrets
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str | None = None
    # How long an SQLite write waits for another writer's lock before it fails (503 to a webhook).
    sqlite_busy_timeout_ms: int = 15000
    redis_url: str | None = None
    smtp_url: SecretStr | None = None
    # smtp://, smtps://, postmark://TOKEN@, ses://KEY:SECRET@REGION or outbox; wins over SMTP_URL.
    mail_transport: SecretStr | None = None
    # A PEM file of CA certificates SMTP servers may also be signed by (a private CA, a
    # self-signed relay), trusted for SMTP only and in addition to the system's.
    smtp_ca_file: Path | None = None
    postmark_api_origin: str | None = None
    ses_api_origin: str | None = None
    # Bounce and complaint webhooks: Postmark's Basic credentials ("user:password", or the
    # password alone), the SNS topics whose messages are believed, and (tests) where SNS lives.
    postmark_webhook_secret: SecretStr | None = None
    sns_topic_arns: str | None = None
    sns_cert_origin: str | None = None
    # DKIM: a PEM RSA key (the text, or a path to it), its selector, and the signing domain
    # (MAIL_FROM's domain when unset).
    dkim_private_key: SecretStr | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    mail_from: str = "Rebound <rebound@localhost>"
    # Seconds before each retry of a send that failed (the last one repeats), comma-separated.
    send_retry_delays: str = "30,120,600,1800"
    # Days a webhook delivery's raw payload (customer data included) is kept once processed,
    # and once failed (longer, so it can still be replayed). Unprocessed ones are always kept.
    inbox_keep_days: int = 30
    inbox_keep_failed_days: int = 90
    app_url: str | None = None
    secret_key: SecretStr | None = None
    token_key: SecretStr | None = None
    shopify_api_key: str | None = None
    shopify_api_secret: SecretStr | None = None
    shopify_api_origin: str | None = None
    woocommerce_api_origin: str | None = None
    port: int = 8000
    rebound_home: Path = Path(".rebound")

    @field_validator(
        "database_url",
        "redis_url",
        "app_url",
        "shopify_api_key",
        "shopify_api_origin",
        "woocommerce_api_origin",
        "postmark_api_origin",
        "ses_api_origin",
        "sns_topic_arns",
        "sns_cert_origin",
        "dkim_selector",
        "dkim_domain",
        "smtp_ca_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(
        "smtp_url",
        "mail_transport",
        "postmark_webhook_secret",
        "dkim_private_key",
        "secret_key",
        "token_key",
        "shopify_api_secret",
        mode="before",
    )
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def home(self) -> Path:
        home = self.rebound_home.expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        return home

    @property
    def database(self) -> str:
        """The database URL; an SQLite file in the data folder when DATABASE_URL is unset."""
        return self.database_url or f"sqlite:///{self.home / 'rebound.db'}"

    @field_validator("send_retry_delays")
    @classmethod
    def _delays_are_seconds(cls, value: str) -> str:
        delays = [part.strip() for part in value.split(",")]
        if not delays or not all(part.isdigit() for part in delays):
            raise ValueError("SEND_RETRY_DELAYS is whole seconds separated by commas, as 30,120")
        return value

    @field_validator("inbox_keep_days", "inbox_keep_failed_days")
    @classmethod
    def _at_least_a_day(cls, value: int, info: ValidationInfo) -> int:
        # 0 would mean "delete at once" to some and "keep forever" to others: neither is allowed.
        if value < 1:
            name = (info.field_name or "").upper()
            raise ValueError(f"{name} is a number of days, 1 or more (got {value})")
        return value

    @property
    def retry_delays(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.send_retry_delays.split(","))

    @property
    def sns_topics(self) -> frozenset[str]:
        """The SNS topic ARNs whose bounce and complaint notifications are believed."""
        return frozenset(
            arn.strip() for arn in (self.sns_topic_arns or "").split(",") if arn.strip()
        )

    @property
    def mail_from_address(self) -> str:
        """MAIL_FROM's address, without its name."""
        return _address_in(self.mail_from)

    @property
    def mail_from_domain(self) -> str:
        return self.mail_from_address.rpartition("@")[2].lower() or "localhost"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def public_url(self) -> str:
        """Where links in emails point: APP_URL, else this machine's server."""
        return (self.app_url or f"http://localhost:{self.port}").rstrip("/")

    @property
    def signing_key(self) -> bytes:
        """SECRET_KEY, or a random key kept in the data folder so links survive restarts."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        key_file = self.home / "secret_key"
        try:
            # O_EXCL: when the API and the worker start together, only one key is ever written.
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return key_file.read_text().strip().encode()
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        return key_file.read_text().strip().encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()


@lru_cache(maxsize=16)
def _address_in(mail_from: str) -> str:
    # Parsed once, not for every email: the address parser was a twentieth of making one.
    return parseaddr(mail_from)[1]
