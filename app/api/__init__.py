"""The JSON API the admin uses, under /api: every call is authenticated for one shop (`auth.py`).
One module per area: `login` (the admin sign-in link, /api/session), `shop`, `flows`,
`activity`, `privacy`, `analytics` (overview and A/B tests); `errors` shapes refusals."""
