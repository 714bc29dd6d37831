from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint, true
from sqlmodel import Field, SQLModel

from app.db import utcnow


class Shop(SQLModel, table=True):
    __tablename__ = "shops"
    __table_args__ = (UniqueConstraint("platform", "domain"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    # Shopify: STORE.myshopify.com. WooCommerce: the store's host (and port), from its URL.
    domain: str = Field(max_length=255)
    base_url: str | None = Field(default=None, max_length=512)  # WooCommerce: https://store
    name: str = Field(max_length=255)
    is_demo: bool = False
    # Fernet ciphertexts (app.shops.secrets): tokens are never stored in the clear.
    access_token_encrypted: str | None = None
    api_secret_encrypted: str | None = None
    # Shopify's expiring offline tokens (public apps): the access token lasts an hour and is
    # renewed with the refresh token, which lasts 90 days and is replaced at each renewal.
    # None for a token that does not expire (a custom app's, WooCommerce keys).
    token_expires_at: datetime | None = None
    refresh_token_encrypted: str | None = None
    refresh_token_expires_at: datetime | None = None
    # Shopify: the client id of the store's own app (made in the Dev Dashboard), whose client
    # credentials (the secret is api_secret) get a new 24-hour token when one runs out.
    client_id: str | None = Field(default=None, max_length=255)
    # The shop's own mail transport URL (MAIL_TRANSPORT's forms), encrypted; None: the default.
    mail_transport_encrypted: str | None = None
    uninstalled_at: datetime | None = None
    # Set when the platform answered that the token is no longer valid; cleared on reconnect.
    token_invalid_at: datetime | None = None
    # Read from the platform at install: who the shop is, for emails and local times.
    email: str | None = Field(default=None, max_length=320)
    currency: str | None = Field(default=None, max_length=3)
    locale: str | None = Field(default=None, max_length=32)
    timezone: str | None = Field(default=None, max_length=64)
    country_code: str | None = Field(default=None, max_length=2)
    address: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    # Sending rules across flows. Quiet hours as "HH:MM-HH:MM" in the customer's time zone
    # (the shop's when unknown); the cap is the least time between two marketing emails to one
    # customer from different flows. None switches either off.
    quiet_hours: str | None = Field(default="21:00-08:00", max_length=11)
    frequency_cap: int | None = Field(default=16 * 3600)
    # How the shop's emails look and who they come from: sender_name, reply_to, logo_url,
    # accent_color, phone, contact_email, chat_url, social {network: url} (app.shops.service).
    profile: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # Click redirects and the open pixel; a shop switches them off where consent requires.
    tracking: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    # An order counts for a Rebound email clicked at most this many days before it was placed.
    attribution_days: int = Field(default=5, sa_column_kwargs={"server_default": "5"})
    created_at: datetime = Field(default_factory=utcnow)
