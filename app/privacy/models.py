from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from app.db import utcnow


class DataRequest(SQLModel, table=True):
    """A customer asked the merchant for their data; the export is kept here for the merchant."""

    __tablename__ = "data_requests"

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    platform_request_id: str | None = Field(default=None, max_length=64)
    customer_email: str | None = Field(default=None, max_length=320)
    export: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
