"""The languages emails are written in: gettext catalogs under locales/, chosen per customer.

Catalogs are the .po files themselves, compiled in memory when first used, so there is no
build step and no binary in the repository. A string missing from a catalog comes out in
English: an email is never broken by a missing translation."""

import gettext
import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES = Path(__file__).resolve().parents[2] / "locales"
DOMAIN = "messages"
DEFAULT = "en"
LANGUAGES = ("en", "sv", "de", "nb", "ru", "is")
# Tags people and platforms use for the same language: Norwegian is written nb in catalogs.
ALIASES = {"no": "nb", "nn": "nb"}

_current: ContextVar[str] = ContextVar("email_language", default=DEFAULT)


def language(*candidates: str | None) -> str:
    """The first candidate Rebound writes in (sv-SE → sv, no → nb), else English."""
    for candidate in candidates:
        if not candidate:
            continue
        base = candidate.replace("_", "-").split("-")[0].strip().lower()
        base = ALIASES.get(base, base)
        if base in LANGUAGES:
            return base
    return DEFAULT


@cache
def translations(lang: str) -> gettext.NullTranslations:
    path = LOCALES / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == DEFAULT or not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


@contextmanager
def writing_in(lang: str) -> Iterator[None]:
    """Every string translated inside is in `lang` (templates render synchronously inside)."""
    token = _current.set(language(lang))
    try:
        yield
    finally:
        _current.reset(token)


def current() -> str:
    return _current.get()


def gettext_(message: str) -> str:
    return translations(_current.get()).gettext(message)


def ngettext_(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, n)
