"""Signed links and encrypted secrets."""

import pytest
from pydantic import SecretStr

from app import security
from app.links import urls
from app.settings import get_settings


def test_signed_token_round_trips_and_refuses_any_change() -> None:
    token = security.sign("restore", {"shop": 1, "send": 2})
    data, mac = token.split(".")

    assert security.unsign("restore", token) == {"shop": 1, "send": 2}
    assert security.unsign("unsubscribe", token) is None  # another purpose, another key
    assert security.unsign("restore", f"{data}.{mac[:-1]}A") is None
    forged_data = security.sign("restore", {"shop": 1, "send": 3}).split(".")[0]
    assert security.unsign("restore", f"{forged_data}.{mac}") is None
    assert security.unsign("restore", "") is None
    assert security.unsign("restore", "...") is None


def test_link_readers_refuse_payloads_of_the_wrong_shape() -> None:
    wrong = security.sign(urls.RESTORE, {"shop": "1", "send": True})

    assert urls.read_restore(wrong) is None
    assert urls.read_unsubscribe(security.sign(urls.UNSUBSCRIBE, {"shop": 1})) is None
    ok = urls.read_unsubscribe(urls.unsubscribe_token(4, "a@b.c", lang="sv"))
    assert ok == urls.Recipient(shop_id=4, email="a@b.c", lang="sv")


def test_links_without_a_language_or_with_one_rebound_does_not_write_read_as_none() -> None:
    """Links signed before they carried the email's language still work."""
    old = security.sign(urls.UNSUBSCRIBE, {"shop": 4, "email": "a@b.c"})
    odd = security.sign(urls.NPS, {"shop": 4, "send": 9, "lang": "xx"})

    assert urls.read_unsubscribe(old) == urls.Recipient(shop_id=4, email="a@b.c", lang=None)
    assert urls.read_send_ref(urls.NPS, odd) == urls.SendRef(shop_id=4, send_id=9, lang=None)


def test_secrets_are_encrypted_not_encoded() -> None:
    ciphertext = security.encrypt("shpat_secret")

    assert "shpat_secret" not in ciphertext
    assert security.decrypt(ciphertext) == "shpat_secret"
    assert security.encrypt("shpat_secret") != ciphertext  # a fresh IV every time


def test_token_key_when_set_is_the_key_for_tokens_at_rest() -> None:
    settings = get_settings()
    with_secret_key = security.encrypt("shpat_secret")
    settings.token_key = SecretStr("a-separate-token-key")
    try:
        with_token_key = security.encrypt("shpat_secret")
        assert security.decrypt(with_token_key) == "shpat_secret"
        with pytest.raises(ValueError, match="cannot be decrypted"):
            security.decrypt(with_secret_key)
    finally:
        settings.token_key = None
