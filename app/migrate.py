"""Apply the Alembic migrations to the configured database."""

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[1]


def upgrade(url: str | None = None) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    if url:
        config.attributes["url"] = url
    command.upgrade(config, "head")
