"""The pages email links lead to, written in the language of the email the link came from."""

from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse

from app.mail import i18n
from app.mail.render import environment


class InvalidLink(HTTPException):
    """A link that leads nowhere (forged, cut short, or its send is gone): a 404 page, in `lang`
    when the link could still say which, else in the browser's language."""

    def __init__(self, lang: str | None = None) -> None:
        super().__init__(404, "this link is not valid")
        self.lang = lang


def page(name: str, lang: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """templates/pages/<name>.html in `lang`, rendered with the emails' environment and catalogs
    (the same Jinja options babel.cfg extracts with)."""
    lang = i18n.language(lang)
    with i18n.writing_in(lang):
        html = environment.get_template(f"pages/{name}.html").render({**context, "lang": lang})
    return HTMLResponse(html, status_code=status_code, headers={"Content-Language": lang})


async def invalid_link_page(request: Request, exc: Exception) -> HTMLResponse:
    lang = getattr(exc, "lang", None) or i18n.language(*browser_languages(request))
    return page("link_invalid", lang, {}, status_code=404)


def browser_languages(request: Request) -> list[str]:
    """Accept-Language's tags, most wanted first (`sv-SE,en;q=0.5` → sv-SE, en)."""
    weighted = []
    for position, item in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = item.strip().partition(";")
        weight = _q(params)
        if tag and tag != "*" and weight > 0:
            weighted.append((-weight, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


def _q(params: str) -> float:
    name, _, value = params.strip().partition("=")
    if name.strip() != "q":
        return 1.0
    try:
        return float(value)
    except ValueError:
        return 0.0
