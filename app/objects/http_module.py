"""The http module protocol: what Provisor POSTs to an endpoint, and what it answers (its
2xx reply and the body of a callback). See *The http module protocol* in the OpenAPI
document's description."""

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from app.models import Operation, Service
from app.objects.base import Output
from app.objects.fields import Id, OneOf


class HttpModuleService(Output):
    id: Id
    status: OneOf(Service.STATUSES)
    remote_id: str | None
    details: dict[str, Any]
    expires_at: str | None = Field(
        None, description="When the service expires (ISO 8601, UTC), for renewals."
    )


class HttpModuleTariff(Output):
    id: Id
    name: str
    product_type: str
    internal_name: str
    price: str
    period: str


class HttpModuleItem(Output):
    """For ensure_item."""

    internal_name: str


class HttpModuleClient(Output):
    id: Id
    name: str
    email: str


class HttpModuleRequest(Output):
    """What Provisor POSTs to an http module's `url` for each operation (and, with
    `operation: "check"` and no operation id, for Test connection)."""

    operation: OneOf((*Operation.KINDS, "check"))
    operation_id: Id | None = Field(description="The idempotency key (null for a check).")
    attempt: int = Field(ge=1)
    service: HttpModuleService | None
    tariff: HttpModuleTariff | None
    item: HttpModuleItem | None
    client: HttpModuleClient | None
    params: dict[str, Any] = Field(
        description="The order's params merged with the operation's (for change_tariff: "
        "`tariff_id` and `tariff_internal_name` of the new tariff; `requested_by` for staff "
        "actions; `reason` for suspend, when staff gave one)."
    )
    new_password: str | None = Field(
        None, description="change_password only: the new password Provisor chose to set."
    )


class HttpModuleDone(Output):
    status: Literal["done"]
    remote_id: str | int | None = Field(
        None, description="The id on the panel (stored on the service/item)."
    )
    details: dict[str, Any] = Field(
        {}, description="Detail fields for the service (ip, username, ...)."
    )
    expires_at: str | None = Field(
        None, description="ISO 8601: the service's new expiry (certificates, domains)."
    )


class HttpModulePending(Output):
    status: Literal["pending"]


class HttpModuleError(Output):
    status: Literal["error"]
    message: str = ""
    permanent: bool = Field(False, description="True: no retry, straight to a manual task.")


class HttpModuleReply(
    RootModel[
        Annotated[
            HttpModuleDone | HttpModulePending | HttpModuleError, Field(discriminator="status")
        ]
    ]
):
    """The endpoint's 2xx reply, and the body of a callback."""


OUTPUTS = [HttpModuleRequest]  # what Provisor sends
INPUTS = [HttpModuleReply]  # what Provisor accepts
