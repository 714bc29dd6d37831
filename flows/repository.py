"""Every query on flows, enrollments, sends and clicks."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import insert_for
from flows.models import Click, Enrollment, EnrollmentStatus, Flow, Send, SendStatus


async def get_flow(session: AsyncSession, shop_id: int, name: str) -> Flow | None:
    query = select(Flow).where(Flow.shop_id == shop_id, Flow.name == name)
    return (await session.exec(query)).first()


async def list_flows(session: AsyncSession, shop_id: int) -> Sequence[Flow]:
    query = select(Flow).where(Flow.shop_id == shop_id).order_by(col(Flow.name))
    return (await session.exec(query)).all()


async def get_enrollment(session: AsyncSession, enrollment_id: int) -> Enrollment | None:
    return await session.get(Enrollment, enrollment_id, populate_existing=True)


async def enrollment_for_checkout(
    session: AsyncSession, shop_id: int, flow: str, checkout_id: int
) -> Enrollment | None:
    query = select(Enrollment).where(
        Enrollment.shop_id == shop_id,
        Enrollment.flow == flow,
        Enrollment.checkout_id == checkout_id,
    )
    return (await session.exec(query)).first()


async def insert_enrollment(session: AsyncSession, enrollment: Enrollment) -> bool:
    """Insert unless this checkout is enrolled already (a concurrent delivery may have won)."""
    values = enrollment.model_dump(exclude={"id"})
    statement = (
        insert_for(session, Enrollment)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["shop_id", "flow", "checkout_id"])
    )
    result = await session.exec(statement)
    return bool(result.rowcount)


async def enrollments_settled_by_order(
    session: AsyncSession,
    shop_id: int,
    *,
    checkout_ids: Sequence[int],
    email: str | None,
    placed_at: datetime,
) -> Sequence[Enrollment]:
    """Enrollments an order settles: its own checkout or cart, or the same customer's earlier
    carts. Those already ended by the checkout's own completion count too, for attribution."""
    matches: list[ColumnElement[bool]] = [col(Enrollment.checkout_id).in_(checkout_ids)]
    if email:
        matches.append((col(Enrollment.email) == email) & (col(Enrollment.created_at) <= placed_at))
    query = select(Enrollment).where(
        Enrollment.shop_id == shop_id,
        or_(
            col(Enrollment.status).in_([EnrollmentStatus.ACTIVE, EnrollmentStatus.DONE]),
            col(Enrollment.exit_reason) == "purchased",
        ),
        col(Enrollment.recovered_order_id).is_(None),
        or_(*matches),
    )
    return (await session.exec(query)).all()


async def active_enrollments(session: AsyncSession, shop_id: int) -> Sequence[Enrollment]:
    query = select(Enrollment).where(
        Enrollment.shop_id == shop_id, Enrollment.status == EnrollmentStatus.ACTIVE
    )
    return (await session.exec(query)).all()


async def active_enrollments_for_email(
    session: AsyncSession, shop_id: int, email: str
) -> Sequence[Enrollment]:
    query = select(Enrollment).where(
        Enrollment.shop_id == shop_id,
        Enrollment.email == email,
        Enrollment.status == EnrollmentStatus.ACTIVE,
    )
    return (await session.exec(query)).all()


async def due_enrollments(session: AsyncSession, until: datetime) -> Sequence[Enrollment]:
    query = (
        select(Enrollment)
        .where(Enrollment.status == EnrollmentStatus.ACTIVE, col(Enrollment.due_at) <= until)
        .order_by(col(Enrollment.due_at))
    )
    return (await session.exec(query)).all()


async def has_sends(session: AsyncSession, enrollment_id: int) -> bool:
    query = select(Send.id).where(Send.enrollment_id == enrollment_id).limit(1)
    return (await session.exec(query)).first() is not None


async def claim_send(session: AsyncSession, enrollment: Enrollment, step: int) -> Send | None:
    """Insert the unique claim on this step's email; None when it was claimed before."""
    assert enrollment.id is not None
    statement = (
        insert_for(session, Send)
        .values(
            shop_id=enrollment.shop_id,
            enrollment_id=enrollment.id,
            step=step,
            email=enrollment.email,
            status=SendStatus.SENDING,
        )
        .on_conflict_do_nothing(index_elements=["enrollment_id", "step"])
    )
    result = await session.exec(statement)
    if not result.rowcount:
        return None
    query = select(Send).where(Send.enrollment_id == enrollment.id, Send.step == step)
    return (await session.exec(query)).one()


async def get_send(session: AsyncSession, shop_id: int, send_id: int) -> Send | None:
    query = select(Send).where(Send.shop_id == shop_id, Send.id == send_id)
    return (await session.exec(query)).first()


async def sends_for_enrollment(session: AsyncSession, enrollment_id: int) -> Sequence[Send]:
    query = select(Send).where(Send.enrollment_id == enrollment_id).order_by(col(Send.step))
    return (await session.exec(query)).all()


def add_click(session: AsyncSession, send: Send) -> None:
    assert send.id is not None
    session.add(Click(shop_id=send.shop_id, send_id=send.id))
