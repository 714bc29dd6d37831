"""The arq worker: the functions it runs, the sweeper cron, and how it is started."""

import logging
from typing import Any

from arq import cron
from arq.worker import Worker

from app.analytics.tasks import choose_winners
from app.db import dispose_engine
from app.inbox.tasks import ingest, purge_inbox
from app.mail.transport import close_transports, transport_for
from app.redis import redis_settings
from app.settings import get_settings
from flows.tasks import StepBatches, run_step, sweep, winback_scan
from integrations.shopify.tokens import renew_tokens
from integrations.woocommerce.connect import set_up_store

log = logging.getLogger("rebound.worker")
MAX_JOBS = 50


async def _startup(ctx: dict[str, Any]) -> None:
    ctx["transport"] = transport_for(get_settings())
    StepBatches.of(ctx)


async def _shutdown(ctx: dict[str, Any]) -> None:
    if "transport" in ctx:
        await close_transports(ctx["transport"])
    await dispose_engine()


def make_worker(**overrides: Any) -> Worker:
    """A worker on the configured Redis; tests and `rebound serve` pass their own options."""
    options: dict[str, Any] = {
        "functions": [ingest, run_step, set_up_store],
        "cron_jobs": [
            cron(sweep, second=0, run_at_startup=True, unique=True),
            # Once a day, in the European morning: lapsed customers start win-back.
            # Its own time limit: arq's default of 5 minutes is short for a million customers.
            cron(winback_scan, hour=7, minute=0, second=30, unique=True, timeout=4 * 3600),
            cron(choose_winners, minute=15, second=0, unique=True),
            # Shopify refresh tokens last 90 days: renewed daily when under 30 days are left.
            cron(renew_tokens, hour=6, minute=45, second=0, unique=True),
            # Once a day, at night in Europe: old webhook payloads (customer data) are deleted.
            # An hour's limit; a purge cut off keeps the batches it committed, the next goes on.
            cron(purge_inbox, hour=3, minute=40, second=0, unique=True, timeout=3600),
        ],
        "redis_settings": redis_settings(get_settings()),
        "on_startup": _startup,
        "on_shutdown": _shutdown,
        "max_tries": 20,
        "keep_result": 60,
        # arq starts jobs only when it polls, and no more than max_jobs are running: with steps
        # sent in batches (flows.tasks.StepBatches) a batch's jobs end together, and at arq's
        # default of 10 jobs and a poll every 0.2 s a worker sent 50 emails a second at most.
        "max_jobs": MAX_JOBS,
        "poll_delay": 0.05,
    }
    options.update(overrides)
    return Worker(**options)
