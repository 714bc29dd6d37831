"""Customers' data requests (GDPR access requests from the platform) and their exports."""

from datetime import datetime

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel

from app.api.auth import ShopDep
from app.api.errors import RESPONSES, RowId
from app.db import SessionDep
from app.privacy import repository as privacy

router = APIRouter(prefix="/api/privacy", tags=["privacy"], responses=RESPONSES)


class DataRequestSummary(BaseModel):
    id: int
    received_at: datetime
    customer: str | None  # the customer's email, when the request named one
    platform_request_id: str | None


@router.get("/requests")
async def data_requests(shop: ShopDep, session: SessionDep) -> list[DataRequestSummary]:
    """The shop's customers' data requests, newest first."""
    assert shop.id is not None
    return [
        DataRequestSummary(
            id=request.id or 0,
            received_at=request.created_at,
            customer=request.customer_email,
            platform_request_id=request.platform_request_id,
        )
        for request in await privacy.data_requests(session, shop.id)
    ]


@router.get(
    "/requests/{request_id}/export",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "The export"}},
)
async def data_request_export(request_id: RowId, shop: ShopDep, session: SessionDep) -> Response:
    """Everything Rebound held about the customer when they asked, as a JSON file to send them."""
    assert shop.id is not None
    found = await privacy.data_request(session, shop.id, request_id)
    if found is None:
        raise HTTPException(404, "no such data request")
    return Response(
        found.export,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="data-request-{request_id}.json"'},
    )
