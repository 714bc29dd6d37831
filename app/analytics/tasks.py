"""arq jobs of analytics: tests end themselves once a winner is clear, and the winner becomes
the step."""

import logging

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.analytics import abtests
from app.analytics.models import AbTest
from app.db import sessionmaker
from app.shops import repository as shops
from flows import service as flows_service

log = logging.getLogger("rebound.analytics")


async def choose_winners(ctx: dict[str, object]) -> str:
    """Hourly: every running A/B test with a variant best at ≥ 90 % and enough recipients ends
    with that winner, which the flow's step takes over (a new flow version) from then on."""
    async with sessionmaker()() as session:
        running = (await session.exec(select(AbTest).where(col(AbTest.ended_at).is_(None)))).all()
        ended = []
        for test in running:
            winner = await abtests.choose_winner(session, test)
            if winner is not None:
                await adopt_winner(session, test, winner)
                ended.append(f"{test.id}:{winner}")
                log.info("A/B test %s on %s %s: %s wins", test.id, test.flow, test.step_key, winner)
        await session.commit()
    return f"{len(running)} running, ended: {', '.join(ended) or 'none'}"


async def adopt_winner(session: AsyncSession, test: AbTest, winner: str) -> bool:
    """Write the winning variant into its step, for new enrollments; False when the step is
    gone (the merchant changed the flow meanwhile), and the flow is left as it is."""
    shop = await shops.get(session, test.shop_id)
    if shop is None:
        return False
    flow = await flows_service.shop_flow(session, shop, test.flow)
    steps = [dict(step) for step in flow.steps]
    for index, spec in enumerate(steps):
        if abtests.key_of_step(spec, index) == test.step_key:
            steps[index] = abtests.variant_step(spec, test, winner)
            await flows_service.set_steps(session, shop, test.flow, steps)
            return True
    log.warning("A/B test %s: step %s is gone; its winner was not adopted", test.id, test.step_key)
    return False
