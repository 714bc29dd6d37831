"""Alembic runs synchronously on the same database URL the app uses (settings or -x url=…)."""

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import app.models  # noqa: F401  (every table registers itself on SQLModel.metadata)
from app.db import database_url
from app.settings import get_settings

url = (
    context.config.attributes.get("url")
    or context.get_x_argument(as_dictionary=True).get("url")
    or get_settings().database
)
target = database_url(url, asynchronous=False)

engine = create_engine(target)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=target.get_backend_name() == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
