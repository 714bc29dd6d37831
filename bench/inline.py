"""Is inlining styles per email affordable? Renders the abandoned-cart reminder N times with and
without css-inline, in one process, and prints the ratio. Run: .venv/bin/python bench/inline.py

Inlining "once per template when it loads" is not possible here: base.html's stylesheet takes
the shop's accent colour and child templates extend it, so the HTML to inline exists only after
rendering. This measures what inlining per email costs next to the render it follows."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.mail import i18n  # noqa: E402
from app.mail.render import INLINER, environment  # noqa: E402

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


def timed(label: str, work: object) -> float:
    start = time.perf_counter()
    for done in range(1, N + 1):
        work()  # type: ignore[operator]
        if done % max(N // 5, 1) == 0:
            print(f"  {label}: {done}/{N}", file=sys.stderr)
    return (time.perf_counter() - start) / N


def main() -> None:
    template = environment.get_template("email/abandoned_cart.html")
    with i18n.writing_in("en"):
        html = template.render(CONTEXT)
        render = timed("render", lambda: template.render(CONTEXT))
        both = timed("render + inline", lambda: INLINER.inline(template.render(CONTEXT)))
    inline_only = timed("inline", lambda: INLINER.inline(html))
    result = {
        "emails": N,
        "render_ms": round(render * 1000, 3),
        "inline_ms": round(inline_only * 1000, 3),
        "render_and_inline_ms": round(both * 1000, 3),
        "inline_share_of_compose": round(inline_only / both, 3),
        "ratio_render_plus_inline_to_render": round(both / render, 2),
    }
    print(f"{'render only':<24}{result['render_ms']:>8} ms  (baseline)")
    print(f"{'render + css-inline':<24}{result['render_and_inline_ms']:>8} ms  "
          f"({result['ratio_render_plus_inline_to_render']}x the baseline)")  # fmt: skip
    print(f"{'css-inline alone':<24}{result['inline_ms']:>8} ms")
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
