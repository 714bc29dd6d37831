from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import utcnow


class Shop(SQLModel, table=True):
    __tablename__ = "shops"
    __table_args__ = (UniqueConstraint("platform", "domain"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    domain: str = Field(max_length=255)
    name: str = Field(max_length=255)
    is_demo: bool = False
    # Fernet ciphertexts (app.shops.secrets): tokens are never stored in the clear.
    access_token_encrypted: str | None = None
    api_secret_encrypted: str | None = None
    uninstalled_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
