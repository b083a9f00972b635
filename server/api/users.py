"""The REST API's side of remote sign-in: tenant user accounts devices are signed in as, the
admin's "Sign in a user" (the device's pending user code) and sign-out."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.http import DeviceOut, M, T, device_out, tenant_first, who
from server.oauth.service import OAuthService
from server.oauth.store import UserRow
from server.store.base import Invalid
from server.web.keys import SERVICES
from server.web.routes import Param, RouteTable

routes = RouteTable(before_body=tenant_first)


def _oauth(request: web.Request) -> OAuthService:
    return request.app[SERVICES].oauth


# ---- admin: "Sign in a user", sign-out ---------------------------------------------------------------


class SignInOut(BaseModel):
    mac: str
    user_code: str = Field(description="the code the device shows (XXXX-XXXX)")
    verification_uri: str
    verification_uri_complete: str = Field(description="opens the page with the code filled in")
    expires_at: str


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/devices/{mac}/sign-in",
    summary="Sign in a user: the device's pending user code and where to enter it",
    tag="sign-in",
    params=(T, M),
    responses={
        200: ("the pending sign-in", SignInOut),
        409: ("the device has not started sign-in, or is not provisioned", None),
    },
)
async def admin_sign_in(request: web.Request, tenant: str, mac: str) -> web.Response:
    code = await _oauth(request).sign_in_code(who(request), tenant, mac)
    return web.json_response(
        {
            "mac": code.mac,
            "user_code": code.user_code,
            "verification_uri": code.verification_uri,
            "verification_uri_complete": code.verification_uri_complete,
            "expires_at": code.expires_at,
        },
        headers={"Cache-Control": "no-store"},
    )


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/devices/{mac}/sign-out",
    summary="Sign a device out: revokes its tokens; it returns to awaiting sign-in",
    tag="sign-in",
    params=(T, M),
    responses={200: ("signed out", DeviceOut), 409: ("the device is not provisioned", None)},
)
async def admin_sign_out(request: web.Request, tenant: str, mac: str) -> dict[str, Any]:
    d = await _oauth(request).sign_out(who(request), tenant, mac)
    return device_out(d)


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(description="the tenant's user account the devices are signed in as")
    macs: list[str] | None = Field(default=None, description="devices whose sign-in to approve")
    all_pending: bool = Field(
        default=False, description="every device of the tenant that is waiting for approval"
    )


class ApproveOut(BaseModel):
    user: str
    approved: int = Field(description="devices signed in by this call")
    macs: list[str] = Field(description="the devices signed in by this call")
    not_pending: list[str] = Field(
        description="MACs asked for that had no pending sign-in (not asked yet, already "
        "answered, or expired): approve again once they show their code"
    )


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/sign-ins/approve",
    summary="Approve pending sign-ins in bulk: the devices sign in as one of the tenant's users",
    tag="sign-in",
    params=(T,),
    body=ApproveIn,
    responses={
        200: ("what was approved", ApproveOut),
        422: ("no such user in the tenant, a bad MAC, or neither/both of macs, all_pending", None),
        400: ("the body is not JSON or does not match the schema", None),
        409: ("the user account is disabled", None),
    },
)
async def approve_sign_ins(request: web.Request, tenant: str, body: ApproveIn) -> web.Response:
    if body.all_pending == (body.macs is not None):
        raise Invalid('give either "macs": [...] or "all_pending": true (not both)')
    done = await _oauth(request).approve_pending(who(request), tenant, body.user, body.macs)
    return web.json_response(
        {
            "user": done.user,
            "approved": len(done.approved),
            "macs": done.approved,
            "not_pending": done.not_pending,
        },
        headers={"Cache-Control": "no-store"},
    )


# ---- admin: tenant user accounts ------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(_Body):
    username: str = Field(
        description="unique across tenants: a-z, 0-9, . _ @ + - (e.g. room-101@contoso.com)"
    )
    display_name: str = Field(default="", max_length=100)
    password: str = Field(description="8-256 characters; stored as argon2id")


class UserPatch(_Body):
    disabled: bool | None = Field(
        default=None, description="true also signs out every device signed in as this user"
    )
    display_name: str | None = Field(default=None, max_length=100)


class PasswordIn(_Body):
    password: str = Field(description="8-256 characters")


class UserOut(BaseModel):
    username: str
    tenant: str
    display_name: str
    disabled: bool
    created_at: str
    updated_at: str


class UserList(BaseModel):
    count: int
    results: list[UserOut]


def user_out(u: UserRow) -> dict[str, Any]:
    return {
        "username": u.username,
        "tenant": u.tenant_id,
        "display_name": u.display_name,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    }


U = Param("username", "path", {"type": "string"}, "the account's username")


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/users",
    summary="Create a user account devices can be signed in as",
    tag="users",
    params=(T,),
    body=UserIn,
    responses={201: ("created", UserOut), 409: ("username taken", None)},
)
async def create_user(request: web.Request, tenant: str, body: UserIn) -> dict[str, Any]:
    u = await _oauth(request).users.create(
        who(request), tenant, body.username, body.display_name, body.password
    )
    return user_out(u)


@routes.route(
    "GET",
    "/api/v1/tenants/{tenant}/users",
    summary="List the tenant's user accounts",
    tag="users",
    params=(T,),
    responses={200: ("accounts", UserList)},
)
async def list_users(request: web.Request, tenant: str) -> dict[str, Any]:
    users = await _oauth(request).users.list(who(request), tenant)
    return {"count": len(users), "results": [user_out(u) for u in users]}


@routes.route(
    "GET",
    "/api/v1/tenants/{tenant}/users/{username}",
    summary="One user account",
    tag="users",
    params=(T, U),
    responses={200: ("account", UserOut)},
)
async def get_user(request: web.Request, tenant: str, username: str) -> dict[str, Any]:
    u = await _oauth(request).users.get(who(request), tenant, username)
    return user_out(u)


@routes.route(
    "PATCH",
    "/api/v1/tenants/{tenant}/users/{username}",
    summary="Disable or enable an account, or change its display name",
    tag="users",
    params=(T, U),
    body=UserPatch,
    responses={200: ("updated", UserOut)},
)
async def patch_user(
    request: web.Request, tenant: str, username: str, body: UserPatch
) -> dict[str, Any]:
    u = await _oauth(request).users.update(
        who(request),
        tenant,
        username,
        disabled=body.disabled,
        display_name=body.display_name,
    )
    return user_out(u)


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/users/{username}/password",
    summary="Set a new password for an account",
    tag="users",
    params=(T, U),
    body=PasswordIn,
    responses={204: ("changed", None)},
)
async def reset_password(
    request: web.Request, tenant: str, username: str, body: PasswordIn
) -> None:
    await _oauth(request).users.reset_password(who(request), tenant, username, body.password)
    return None


__all__ = ["routes"]
