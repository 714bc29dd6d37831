"""arq jobs of analytics: tests end themselves once a winner is clear."""

import logging

from sqlmodel import col, select

from app.analytics import abtests
from app.analytics.models import AbTest
from app.db import sessionmaker

log = logging.getLogger("rebound.analytics")


async def choose_winners(ctx: dict[str, object]) -> str:
    """Hourly: every running A/B test with a variant best at ≥ 90 % and enough recipients ends
    with that winner; from then on its step sends as the flow says."""
    async with sessionmaker()() as session:
        running = (await session.exec(select(AbTest).where(col(AbTest.ended_at).is_(None)))).all()
        ended = []
        for test in running:
            winner = await abtests.choose_winner(session, test)
            if winner is not None:
                ended.append(f"{test.id}:{winner}")
                log.info("A/B test %s on %s %s: %s wins", test.id, test.flow, test.step_key, winner)
        await session.commit()
    return f"{len(running)} running, ended: {', '.join(ended) or 'none'}"
