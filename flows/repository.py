"""Every query on flows, enrollments, sends and clicks."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, exists, func, or_, update
from sqlalchemy.orm import QueryableAttribute, load_only
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.analytics.models import AbTest
from app.commerce.models import Checkout, Order
from app.db import insert_for, utcnow
from app.mail.models import Suppression, Unsubscribe
from app.shops.models import Shop
from flows.models import (
    Click,
    CustomerPreference,
    Enrollment,
    EnrollmentStatus,
    Flow,
    NpsAnswer,
    Open,
    Send,
    SendStatus,
)


async def get_flow(session: AsyncSession, shop_id: int, name: str) -> Flow | None:
    query = select(Flow).where(Flow.shop_id == shop_id, Flow.name == name)
    return (await session.exec(query)).first()


async def list_flows(session: AsyncSession, shop_id: int) -> Sequence[Flow]:
    query = select(Flow).where(Flow.shop_id == shop_id).order_by(col(Flow.name))
    return (await session.exec(query)).all()


async def get_enrollment(session: AsyncSession, enrollment_id: int) -> Enrollment | None:
    return await session.get(Enrollment, enrollment_id, populate_existing=True)


@dataclass(frozen=True)
class StepFacts:
    """What every step asks before it sends, read with its rows: the opt-outs of the
    enrollment's address (stored normalized), whether an order settles its cart, and whether
    any A/B test runs on its flow. Asked one by one they were three more round trips a step."""

    suppressed: bool
    unsubscribed: bool
    ordered_from_cart: bool  # an order from this very checkout or cart
    ordered_since_cart: bool  # any order of the cart's customer since the cart began
    testing: bool


class StepRows(NamedTuple):
    enrollment: Enrollment
    shop: Shop
    flow: Flow | None  # None once deleted
    checkout: Checkout | None  # None for other flows, or once the cart is gone
    facts: StepFacts


def _exists(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(*conditions).correlate(Enrollment, Checkout)


_SAME_SHOP_AND_ADDRESS = {
    model: and_(
        col(model.shop_id) == col(Enrollment.shop_id), col(model.email) == col(Enrollment.email)
    )
    for model in (Suppression, Unsubscribe)
}
_FACTS = (
    _exists(_SAME_SHOP_AND_ADDRESS[Suppression]).label("suppressed"),
    _exists(_SAME_SHOP_AND_ADDRESS[Unsubscribe]).label("unsubscribed"),
    _exists(
        col(Order.shop_id) == col(Enrollment.shop_id),
        or_(
            col(Order.checkout_token) == col(Checkout.token),
            col(Order.cart_token) == col(Checkout.cart_token),
        ),
    ).label("ordered_from_cart"),
    _exists(
        col(Order.shop_id) == col(Enrollment.shop_id),
        col(Order.email) == col(Checkout.email),
        col(Order.placed_at) >= col(Checkout.started_at),
    ).label("ordered_since_cart"),
    _exists(
        col(AbTest.shop_id) == col(Enrollment.shop_id),
        col(AbTest.flow) == col(Enrollment.flow),
        col(AbTest.ended_at).is_(None),
    ).label("testing"),
)
# Built once: a statement object keeps its cache key, so each step skips building the query and
# working out its key again (bench/send.py). Typed Any: sqlmodel types selects of four entities.
_STEP_ROWS: Any = (
    select(Enrollment, Shop, Flow, Checkout)
    .add_columns(*_FACTS)
    .join(Shop, col(Shop.id) == col(Enrollment.shop_id))
    .outerjoin(
        Flow,
        and_(col(Flow.shop_id) == col(Enrollment.shop_id), col(Flow.name) == col(Enrollment.flow)),
    )
    .outerjoin(
        Checkout,
        and_(
            col(Checkout.id) == col(Enrollment.checkout_id),
            col(Checkout.shop_id) == col(Enrollment.shop_id),
        ),
    )
    .where(col(Enrollment.id).in_(bindparam("enrollment_ids", expanding=True)))
    .execution_options(populate_existing=True)
)


async def step_rows(session: AsyncSession, enrollment_ids: Sequence[int]) -> dict[int, StepRows]:
    """What every step reads first, in one round trip for a batch of steps: each enrollment,
    its shop, its flow, its cart and the facts every step checks. A missing id is absent."""
    result = await session.exec(_STEP_ROWS, params={"enrollment_ids": list(enrollment_ids)})
    found = {}
    for row in result.all():
        facts = StepFacts(*(bool(value) for value in row[4:]))
        found[row[0].id] = StepRows(row[0], row[1], row[2], row[3], facts)
    return found


async def enrollment_for_checkout(
    session: AsyncSession, shop_id: int, flow: str, checkout_id: int
) -> Enrollment | None:
    query = select(Enrollment).where(
        Enrollment.shop_id == shop_id,
        Enrollment.flow == flow,
        Enrollment.checkout_id == checkout_id,
    )
    return (await session.exec(query)).first()


async def enrollment_for_subject(
    session: AsyncSession, shop_id: int, flow: str, subject: str
) -> Enrollment | None:
    query = select(Enrollment).where(
        Enrollment.shop_id == shop_id, Enrollment.flow == flow, Enrollment.subject == subject
    )
    return (await session.exec(query)).first()


async def insert_enrollment(session: AsyncSession, enrollment: Enrollment) -> Enrollment | None:
    """Insert unless the subject is enrolled already (a concurrent delivery may have won); the
    stored row, or None when it was there before."""
    values = enrollment.model_dump(exclude={"id"})
    statement = (
        insert_for(session, Enrollment)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["shop_id", "flow", "subject"])
        # RETURNING, not rowcount: PostgreSQL's driver reports -1 rows for an INSERT.
        .returning(Enrollment.id)
    )
    if (await session.exec(statement)).scalar_one_or_none() is None:
        return None
    return await enrollment_for_subject(
        session, enrollment.shop_id, enrollment.flow, enrollment.subject
    )


async def insert_enrollments(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[str, int]:
    """`insert_enrollment` for many rows (an enrollment's columns, id apart) in one executemany:
    subject → id of those inserted; a subject enrolled already is left out. The compiled
    statement is cached and SQLAlchemy sends the rows as multi-row VALUES pages (with
    RETURNING), where one INSERT built with every row's values compiled anew each batch."""
    if not rows:
        return {}
    table = Enrollment.__table__  # type: ignore[attr-defined]
    statement = (
        insert_for(session, table)
        .on_conflict_do_nothing(index_elements=["shop_id", "flow", "subject"])
        .returning(table.c.id, table.c.subject)
    )
    result = await session.exec(statement, params=rows)
    return {subject: id_ for id_, subject in result.all()}


async def latest_enrollments_for_emails(
    session: AsyncSession, shop_id: int, flow: str, emails: list[str]
) -> dict[str, datetime]:
    """When each of `emails` last started `flow` (those that ever did): the creation time
    `latest_enrollment_for_email` gives, for a batch at once."""
    query = (
        select(Enrollment.email, func.max(Enrollment.created_at))
        .where(
            Enrollment.shop_id == shop_id,
            Enrollment.flow == flow,
            col(Enrollment.email).in_(emails),
        )
        .group_by(col(Enrollment.email))
    )
    return {email: created for email, created in (await session.exec(query)).all()}


async def enrollments_for_order(
    session: AsyncSession, shop_id: int, order_id: int
) -> Sequence[Enrollment]:
    query = select(Enrollment).where(Enrollment.shop_id == shop_id, Enrollment.order_id == order_id)
    return (await session.exec(query)).all()


async def latest_enrollment_for_email(
    session: AsyncSession, shop_id: int, flow: str, email: str
) -> Enrollment | None:
    query = (
        select(Enrollment)
        .where(Enrollment.shop_id == shop_id, Enrollment.flow == flow, Enrollment.email == email)
        .order_by(col(Enrollment.created_at).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()


async def last_marketing_sent(
    session: AsyncSession, shop_id: int, email: str, *, other_than_enrollment: int
) -> datetime | None:
    """When another series last sent this customer a marketing email (smart sending). A series'
    own earlier steps don't count; another series of the same flow (a second order's) does."""
    query = select(func.max(Send.sent_at)).where(
        Send.shop_id == shop_id,
        Send.email == email,
        Send.status == SendStatus.SENT,
        col(Send.marketing).is_(True),
        Send.enrollment_id != other_than_enrollment,
    )
    return (await session.exec(query)).first()


async def last_offer_sent(
    session: AsyncSession, shop_id: int, email: str, since: datetime
) -> datetime | None:
    query = select(func.max(Send.sent_at)).where(
        Send.shop_id == shop_id,
        Send.email == email,
        Send.status == SendStatus.SENT,
        col(Send.discount_code).is_not(None),
        col(Send.sent_at) >= since,
    )
    return (await session.exec(query)).first()


async def codes_sent_to(session: AsyncSession, shop_id: int, email: str, flow: str) -> set[str]:
    """The discount codes this flow sent the customer (a win-back's or a reward's codes say
    nothing about gaming cart reminders)."""
    query = (
        select(Send.discount_code)
        .join(Enrollment, col(Enrollment.id) == Send.enrollment_id)
        .where(
            Send.shop_id == shop_id,
            Send.email == email,
            Send.status == SendStatus.SENT,
            col(Send.discount_code).is_not(None),
            Enrollment.flow == flow,
        )
    )
    return {code.lower() for code in (await session.exec(query)).all() if code}


async def sent_steps(session: AsyncSession, enrollment_id: int, steps: list[int]) -> list[int]:
    """The ids of this enrollment's sends of these steps that left."""
    query = select(Send.id).where(
        Send.enrollment_id == enrollment_id,
        col(Send.step).in_(steps),
        Send.status == SendStatus.SENT,
    )
    return [send_id for send_id in (await session.exec(query)).all() if send_id is not None]


async def click_count(session: AsyncSession, send_ids: list[int]) -> int:
    query = select(func.count(col(Click.id))).where(col(Click.send_id).in_(send_ids))
    return int((await session.exec(query)).one())


async def record_skip(
    session: AsyncSession,
    enrollment: Enrollment,
    step: int,
    reason: str,
    variant: str | None = None,
) -> None:
    """A step passed over because its conditions did not hold: kept, with why, for the admin."""
    assert enrollment.id is not None
    statement = (
        insert_for(session, Send)
        .values(
            shop_id=enrollment.shop_id,
            enrollment_id=enrollment.id,
            step=step,
            email=enrollment.email,
            status=SendStatus.SKIPPED,
            error=reason,
            marketing=False,
            variant=variant,
        )
        .on_conflict_do_nothing(index_elements=["enrollment_id", "step"])
    )
    await session.exec(statement)


async def record_nps(session: AsyncSession, send: Send, score: int) -> None:
    """The customer's score; clicking another one changes it."""
    assert send.id is not None
    insert = insert_for(session, NpsAnswer).values(
        shop_id=send.shop_id, send_id=send.id, score=score, answered_at=utcnow()
    )
    statement = insert.on_conflict_do_update(
        index_elements=["send_id"],
        set_={"score": insert.excluded.score, "answered_at": insert.excluded.answered_at},
    )
    await session.exec(statement)


async def enrollments_settled_by_order(
    session: AsyncSession,
    shop_id: int,
    *,
    checkout_ids: Sequence[int],
    email: str | None,
    placed_at: datetime,
) -> Sequence[Enrollment]:
    """Enrollments an order may settle: its own checkout or cart, or the same customer's earlier
    ones (their flows' exit rules decide). Those already ended by the checkout's own completion
    count too, for attribution."""
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


# What `engine.schedule` reads of an enrollment.
_SCHEDULING = cast(
    "list[QueryableAttribute[Any]]",
    [Enrollment.id, Enrollment.status, Enrollment.next_step, Enrollment.due_at],
)


async def due_enrollments(session: AsyncSession, until: datetime) -> Sequence[Enrollment]:
    """Due enrollments with only what scheduling their step needs: not their steps and context
    (JSON), which made most of a sweep's time when 100k steps fell due at once."""
    query = (
        select(Enrollment)
        .options(load_only(*_SCHEDULING, raiseload=True))
        .where(Enrollment.status == EnrollmentStatus.ACTIVE, col(Enrollment.due_at) <= until)
        .order_by(col(Enrollment.due_at))
    )
    return (await session.exec(query)).all()


async def has_sends(session: AsyncSession, enrollment_id: int) -> bool:
    query = select(Send.id).where(Send.enrollment_id == enrollment_id).limit(1)
    return (await session.exec(query)).first() is not None


async def has_send(session: AsyncSession, enrollment_id: int, step: int) -> bool:
    query = select(Send.id).where(Send.enrollment_id == enrollment_id, Send.step == step)
    return (await session.exec(query.limit(1))).first() is not None


async def claim_send(
    session: AsyncSession, enrollment: Enrollment, step: int, *, marketing: bool = True
) -> Send | None:
    """Insert the unique claim on this step's email; None when it was claimed before."""
    claimed = await claim_sends(session, [(enrollment, step, marketing)])
    return claimed.get((enrollment.id or 0, step))


async def claim_sends(
    session: AsyncSession, wanted: Sequence[tuple[Enrollment, int, bool]]
) -> dict[tuple[int, int], Send]:
    """Insert the unique claims on these steps' emails (enrollment, step, marketing), in one
    statement; the claims made, by (enrollment id, step). A step claimed before is absent."""
    if not wanted:
        return {}
    rows = [
        {
            "shop_id": enrollment.shop_id,
            "enrollment_id": enrollment.id,
            "step": step,
            "email": enrollment.email,
            "status": SendStatus.SENDING,
            "marketing": marketing,
        }
        for enrollment, step, marketing in wanted
    ]
    statement = (
        insert_for(session, Send)
        .on_conflict_do_nothing(index_elements=["enrollment_id", "step"])
        # RETURNING the rows, not rowcount: PostgreSQL's driver reports -1 rows for an INSERT,
        # and the claims come back as ORM objects without a second query.
        .returning(Send)
    )
    # The rows as parameters, not in the statement: one statement whatever their number,
    # compiled once and sent as one INSERT (SQLAlchemy's insertmanyvalues).
    claimed = (await session.exec(statement, params=rows)).scalars().all()
    return {(send.enrollment_id, send.step): send for send in claimed}


async def get_send(session: AsyncSession, shop_id: int, send_id: int) -> Send | None:
    query = select(Send).where(Send.shop_id == shop_id, Send.id == send_id)
    return (await session.exec(query)).first()


async def sends_for_enrollment(session: AsyncSession, enrollment_id: int) -> Sequence[Send]:
    query = select(Send).where(Send.enrollment_id == enrollment_id).order_by(col(Send.step))
    return (await session.exec(query)).all()


def add_click(session: AsyncSession, send: Send, url: str | None = None) -> None:
    assert send.id is not None
    session.add(Click(shop_id=send.shop_id, send_id=send.id, url=url))


def add_open(session: AsyncSession, send: Send) -> None:
    assert send.id is not None
    session.add(Open(shop_id=send.shop_id, send_id=send.id))


async def save_preference(
    session: AsyncSession, shop_id: int, email: str, key: str, value: str
) -> None:
    insert = insert_for(session, CustomerPreference).values(
        shop_id=shop_id, email=email, key=key, value=value, answered_at=utcnow()
    )
    statement = insert.on_conflict_do_update(
        index_elements=["shop_id", "email", "key"],
        set_={"value": insert.excluded.value, "answered_at": insert.excluded.answered_at},
    )
    await session.exec(statement)


async def preferences(session: AsyncSession, shop_id: int, email: str) -> dict[str, str]:
    query = select(CustomerPreference).where(
        CustomerPreference.shop_id == shop_id, CustomerPreference.email == email
    )
    return {p.key: p.value for p in (await session.exec(query)).all()}


async def recent_activity(
    session: AsyncSession, shop_id: int, limit: int
) -> Sequence[tuple[Send, Enrollment]]:
    """The shop's latest sends (sent, skipped, failed) with their enrollments, newest first."""
    query = (
        select(Send, Enrollment)
        .join(Enrollment, col(Enrollment.id) == Send.enrollment_id)
        .where(Send.shop_id == shop_id)
        .order_by(col(Send.claimed_at).desc(), col(Send.id).desc())
        .limit(limit)
    )
    return (await session.exec(query)).all()


async def waiting_enrollments(
    session: AsyncSession, shop_id: int, limit: int
) -> Sequence[Enrollment]:
    """Running enrollments whose next step waits for something: a parcel, the morning."""
    query = (
        select(Enrollment)
        .where(
            Enrollment.shop_id == shop_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            col(Enrollment.waiting_for).is_not(None),
        )
        .order_by(col(Enrollment.updated_at).desc())
        .limit(limit)
    )
    return (await session.exec(query)).all()


async def ended_enrollments(
    session: AsyncSession, shop_id: int, limit: int
) -> Sequence[Enrollment]:
    """Series that stopped before their end (a purchase, an unsubscribe, a sold-out cart…),
    with the reason, newest first."""
    query = (
        select(Enrollment)
        .where(
            Enrollment.shop_id == shop_id,
            Enrollment.status == EnrollmentStatus.EXITED,
            col(Enrollment.exit_reason).is_not(None),
        )
        .order_by(col(Enrollment.updated_at).desc(), col(Enrollment.id).desc())
        .limit(limit)
    )
    return (await session.exec(query)).all()


async def mark_handoffs(
    session: AsyncSession, leaving: Sequence[tuple[Send, str | None]]
) -> set[int]:
    """Record, and commit, that these claims' messages (with their Message-IDs, for finding
    them in the server's log should a hand-off break) are about to leave; the ids of the sends
    marked. A claim missing from them is no longer this worker's to send (the sweeper released
    it): nothing may then leave. The sweeper deletes only claims without the mark, so one of
    the two wins, never both."""
    message_ids = {send.id: message_id for send, message_id in leaving}
    now = utcnow()
    statement = (
        update(Send)
        .where(
            col(Send.id).in_(list(message_ids)),
            col(Send.status) == SendStatus.SENDING,
            col(Send.handing_off_at).is_(None),
        )
        .values(handing_off_at=now, message_id=case(message_ids, value=col(Send.id)))
        .returning(col(Send.id))
        .execution_options(synchronize_session=False)  # set below, on the marked ones alone
    )
    try:
        marked = set((await session.exec(statement)).scalars().all())
    except StaleDataError:  # the ORM's own pending changes found a row gone
        await session.rollback()
        return set()
    # Committed even when nothing was marked: a rollback would expire every row the session
    # holds, and other messages of the same batch are on their way.
    await session.commit()
    for send, message_id in leaving:
        if send.id in marked:
            set_committed_value(send, "handing_off_at", now)
            set_committed_value(send, "message_id", message_id)
    return marked


async def stale_claims(session: AsyncSession, claimed_before: datetime) -> Sequence[Send]:
    """Claims still `sending` that were made before the moment (candidates for the sweeper)."""
    query = (
        select(Send)
        .where(col(Send.status) == SendStatus.SENDING, col(Send.claimed_at) < claimed_before)
        .order_by(col(Send.id))
    )
    return (await session.exec(query)).all()


async def release_claim(session: AsyncSession, send_id: int) -> bool:
    """Delete a claim that never reached the mail server, so the step can be sent; False when
    its hand-off was marked meanwhile (or it is gone)."""
    statement = (
        delete(Send)
        .where(
            col(Send.id) == send_id,
            col(Send.status) == SendStatus.SENDING,
            col(Send.handing_off_at).is_(None),
        )
        .returning(col(Send.id))
    )
    return (await session.exec(statement)).scalar_one_or_none() is not None


async def mark_unknown(session: AsyncSession, send_id: int, reason: str) -> bool:
    """A claim whose hand-off began and never ended: it may have been delivered. Kept, never
    resent, and shown to the merchant as `unknown`."""
    statement = (
        update(Send)
        .where(
            col(Send.id) == send_id,
            col(Send.status) == SendStatus.SENDING,
            col(Send.handing_off_at).is_not(None),
        )
        .values(status=SendStatus.UNKNOWN, error=reason)
        .returning(col(Send.id))
    )
    return (await session.exec(statement)).scalar_one_or_none() is not None
