from datetime import datetime

from sqlalchemy import JSON, Column, UniqueConstraint
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
    created_at: datetime = Field(default_factory=utcnow)
