"""Inline styles per email, or once per template when it loads? Measures both in one process and
prints each against the per-email baseline. Run: .venv/bin/python bench/inline.py [N]

Per email (what Rebound does): render the template, then css-inline the HTML.

Inline once: a template's HTML depends on the shop's accent colour (in base.html's stylesheet)
and on the email's data (loops over items, conditions on names, plurals), so there is no HTML to
inline before rendering. The closest thing is to render each template once with placeholders
for its words and links, inline that once, and make each email by putting its own (escaped)
values in for the placeholders: no render and no inlining per email. The bench times that, and
then makes every default template in every language (tests/test_templates.py's contexts, with
optional values absent and set) both ways and counts the emails whose final HTML is the same.
The placeholders are built from each email's own context, the best case for inline-once (lists
as long, the same values absent): a shop's real emails differ from each other more than that.

Measured (README, Performance): inline-once is about 7x faster, and wrong for half the emails,
where a customer sees it: a filter runs on the placeholder, not the value (the shop's phone in
a tel: link keeps its spaces), text split into lines becomes one paragraph (the care guide), and
conditions on words take the wrong branch (win-back copy for `top` and `one_time` customers).
"""

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from markupsafe import escape

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.mail import i18n  # noqa: E402
from app.mail.render import INLINER, _charset_first, environment  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
ITEMS = [
    {"title": f"Item {n}", "variant_title": "M", "quantity": 1, "price": "$10.00",
     "line_total": "$10.00", "image_url": f"https://cdn.example/{n}.jpg", "image_alt": "x",
     "sold_out": False, "gone": False}
    for n in range(4)
]  # fmt: skip
CONTEXT = {
    "shop_name": "Nordic Wool", "first_name": "Ada", "step": 0, "items": ITEMS, "item_count": 4,
    "subtotal": "$40.00", "total": "$40.00", "restore_url": "https://rebound.example/r/x",
    "offer": None, "kept_until": "23 December 2026", "unsubscribe_url": "https://r.example/u/x",
    "intro": None, "lang": "en", "subject": "Your cart",
    "brand": {"name": "Nordic Wool", "logo_url": None, "accent": "#2f6f4e",
              "accent_text": "#ffffff", "phone": "+46 8 123", "email": "hi@nw.example",
              "chat_url": None, "social": [], "address_lines": ["Storgatan 1", "Stockholm"]},
}  # fmt: skip
# Private-use characters: no template, catalog or sample text contains them.
MARK = re.compile("\ue000(\\d+)\ue001")


def timed(label: str, work: Callable[[], object]) -> float:
    """Seconds per call of `work`, over N calls, with progress on stderr."""
    start = time.perf_counter()
    for done in range(1, N + 1):
        work()
        if done % max(N // 5, 1) == 0:
            print(f"  {label}: {done}/{N}", file=sys.stderr)
    return (time.perf_counter() - start) / N


# --- per email: what app/mail/render.py does -------------------------------------------------


def per_email(template: str, context: dict[str, Any]) -> str:
    """The final HTML as render.message makes it (subject first, then HTML, inlined)."""
    with i18n.writing_in(context["lang"]):
        subject = environment.get_template(f"email/{template}.subject.txt").render(context)
        full = {**context, "subject": " ".join(subject.split())}
        html = environment.get_template(f"email/{template}.html").render(full)
    return _charset_first(INLINER.inline(html))


# --- inline once: a template rendered with placeholders, inlined when it loads ---------------


def strings_of(value: Any) -> Iterator[str]:
    """The context's strings, in a fixed order: the values placeholders stand for."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from strings_of(value[key])
    elif isinstance(value, list):
        for element in value:
            yield from strings_of(element)


def with_placeholders(value: Any, counter: Iterator[int]) -> Any:
    """The context with each string replaced by a numbered placeholder, in strings_of's order;
    numbers, flags and absent values stay (plurals and conditions need them)."""
    if isinstance(value, str):
        return f"\ue000{next(counter)}\ue001"
    if isinstance(value, dict):
        return {key: with_placeholders(value[key], counter) for key in sorted(value)}
    if isinstance(value, list):
        return [with_placeholders(element, counter) for element in value]
    return value


def load_once(template: str, context: dict[str, Any]) -> str:
    """What inline-once keeps per template: its HTML with placeholders, inlined."""
    shape = with_placeholders(context, iter(range(1_000_000)))
    shape["lang"] = context["lang"]  # the language picks the catalog, it is no placeholder
    return per_email(template, shape)


def from_loaded(loaded: str, context: dict[str, Any]) -> str:
    """An email from the loaded template: its own values, escaped, for the placeholders."""
    values = [str(escape(text)) for text in strings_of(context)]
    return MARK.sub(lambda found: values[int(found.group(1))], loaded)


# --- the same output? ------------------------------------------------------------------------


def default_emails() -> list[tuple[str, str, dict[str, Any]]]:
    """(id, template, context) of every default template in every language."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_templates import cases

    return [
        (f"{case_id}-{lang}", template, {**context, "lang": lang})
        for case_id, template, context in cases()
        for lang in i18n.LANGUAGES
    ]


def compare_outputs() -> tuple[int, dict[str, list[str]]]:
    """How many default emails inline-once makes exactly as per-email does; the others' ids,
    by template."""
    emails = default_emails()
    different: dict[str, list[str]] = {}
    for done, (email_id, template, context) in enumerate(emails, start=1):
        if from_loaded(load_once(template, context), context) != per_email(template, context):
            different.setdefault(template, []).append(email_id)
        if done % max(len(emails) // 5, 1) == 0:
            print(f"  compare: {done}/{len(emails)}", file=sys.stderr)
    return len(emails), different


def main() -> None:
    template = environment.get_template("email/abandoned_cart.html")
    with i18n.writing_in("en"):
        html = template.render(CONTEXT)
        render = timed("render", lambda: template.render(CONTEXT))
        both = timed("render + inline", lambda: INLINER.inline(template.render(CONTEXT)))
    inline_only = timed("inline", lambda: INLINER.inline(html))
    loaded = load_once("abandoned_cart", CONTEXT)
    once = timed("inline once: fill in", lambda: from_loaded(loaded, CONTEXT))
    total, different = compare_outputs()
    result = {
        "emails": N,
        "render_ms": round(render * 1000, 3),
        "inline_ms": round(inline_only * 1000, 3),
        "render_and_inline_ms": round(both * 1000, 3),
        "inline_once_fill_in_ms": round(once * 1000, 3),
        "inline_share_of_compose": round(inline_only / both, 3),
        "ratio_render_to_baseline": round(render / both, 2),
        "ratio_inline_once_to_baseline": round(once / both, 3),
        "default_emails_compared": total,
        "default_emails_different_inline_once": sum(map(len, different.values())),
        "different_by_template": {name: len(ids) for name, ids in different.items()},
        "different_examples": [ids[0] for ids in different.values()],
    }
    report(result)
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


def report(result: dict[str, Any]) -> None:
    rows = [
        ("render + css-inline", "render_and_inline_ms", "baseline: per email, as Rebound does"),
        ("render alone", "render_ms", f"{result['ratio_render_to_baseline']}x the baseline: "
         "the floor of any inline-once that still renders"),
        ("css-inline alone", "inline_ms", ""),
        ("inline once (placeholders filled)", "inline_once_fill_in_ms",
         f"{result['ratio_inline_once_to_baseline']}x the baseline"),
    ]  # fmt: skip
    for label, key, note in rows:
        print(f"{label:<34}{result[key]:>8} ms" + (f"  ({note})" if note else ""))
    total = result["default_emails_compared"]
    different = result["default_emails_different_inline_once"]
    print(f"inline once makes {total - different} of {total} default emails (every template, "
          f"every language) exactly as per email does; e.g. different: "
          f"{', '.join(result['different_examples'][:4])}")  # fmt: skip


if __name__ == "__main__":
    main()
