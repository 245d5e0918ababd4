"""The admin routes on a tiny Starlette app through httpx.ASGITransport: status and unload, admin only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from realtime.auth import TokenAuthority
from realtime.config import load_settings
from realtime.gpu_scheduler import GpuScheduler, models_status, routes
from tests.gpu.helpers import MiB, scheduler_with

AUTHORITY = TokenAuthority(load_settings({"REALTIME_JWT_SECRET": "x" * 40}))
ADMIN = {"Authorization": "Bearer " + AUTHORITY.issue("root", admin=True)}
USER = {"Authorization": "Bearer " + AUTHORITY.issue("alice")}
JSON = {"content-type": "application/json"}


@pytest.fixture
async def scheduler() -> AsyncIterator[GpuScheduler]:
    scheduler, _, _ = scheduler_with({"a": 300 * MiB, "b": 300 * MiB})
    await scheduler.preload("a", "b")
    yield scheduler
    await scheduler.aclose()


def client_for(scheduler: GpuScheduler | None) -> httpx.AsyncClient:
    app = Starlette(routes=routes(lambda: scheduler, AUTHORITY))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def unload(client: httpx.AsyncClient, body: object, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return await client.post("/api/models/unload", content=json.dumps(body), headers={**JSON, **headers})


async def test_status_needs_an_admin_token(scheduler: GpuScheduler) -> None:
    """401 without a valid token (with WWW-Authenticate), 403 for a user, 200 for an admin."""
    async with client_for(scheduler) as client:
        missing = await client.get("/api/models/status")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        assert (await client.get("/api/models/status", headers={"Authorization": "Bearer nope"})).status_code == 401
        forbidden = await client.get("/api/models/status", headers=USER)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        ok = await client.get("/api/models/status", headers=ADMIN)
    assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    body, direct = ok.json(), models_status(scheduler)
    assert body["devices"] == direct["devices"] and body["models"].keys() == direct["models"].keys()
    assert body["models"]["a"]["state"] == "resident" and body["devices"]["cuda:0"]["used_by_us_bytes"] == 600 * MiB


async def test_admin_cookie_is_accepted(scheduler: GpuScheduler) -> None:
    """The access_token cookie works like the Bearer header."""
    token = ADMIN["Authorization"].removeprefix("Bearer ")
    async with client_for(scheduler) as client:
        client.cookies.set("access_token", token)
        assert (await client.get("/api/models/status")).status_code == 200


async def test_unload_one_and_all(scheduler: GpuScheduler) -> None:
    """POST unload {"model": name} unloads that model; {"model": null} unloads every idle one."""
    async with client_for(scheduler) as client:
        one = await unload(client, {"model": "a"})
        assert one.status_code == 200 and one.json() == {"unloaded": ["a"], "in_use": []}
        every = await unload(client, {"model": None, "wait": False})
        assert every.status_code == 200 and every.json() == {"unloaded": ["a", "b"], "in_use": []}
    assert {m["state"] for m in scheduler.status()["models"].values()} == {"unloaded"}


async def test_unload_refuses_models_in_use_with_409(scheduler: GpuScheduler) -> None:
    """A model in use is refused (409, model_in_use, listed) and the idle ones still go."""
    lease = await scheduler.acquire("b")
    async with client_for(scheduler) as client:
        refused = await unload(client, {"model": None})
        assert refused.status_code == 409
        body = refused.json()
        assert body["error"]["code"] == "model_in_use" and "b" in body["error"]["message"]
        assert (body["unloaded"], body["in_use"]) == (["a"], ["b"])
        waiting = asyncio.create_task(unload(client, {"model": "b", "wait": True, "timeout": 5}))
        await asyncio.sleep(0.02)
        scheduler.release(lease)
        done = await asyncio.wait_for(waiting, 5)
    assert done.status_code == 200 and done.json() == {"unloaded": ["b"], "in_use": []}


async def test_unload_checks_the_request(scheduler: GpuScheduler) -> None:
    """Unknown model 404; bad JSON, a missing or wrong field 400; not JSON 415; a user 403; cross-site 403."""
    async with client_for(scheduler) as client:
        assert (await unload(client, {"model": "nope"})).status_code == 404
        assert (await unload(client, {"wait": True})).status_code == 400
        assert (await unload(client, {"model": 3})).status_code == 400
        assert (await unload(client, {"model": "a", "wait": "yes"})).status_code == 400
        assert (await unload(client, {"model": "a", "wait": True, "timeout": -1})).status_code == 400
        bad = await client.post("/api/models/unload", content=b"{", headers={**JSON, **ADMIN})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        form = await client.post("/api/models/unload", content=b"model=a", headers=ADMIN)
        assert form.status_code == 415
        assert (await unload(client, {"model": "a"}, USER)).status_code == 403
        assert (await unload(client, {"model": "a"}, {})).status_code == 401
        cross = await unload(client, {"model": "a"}, {**ADMIN, "origin": "https://evil.example"})
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "origin_not_allowed"
    assert scheduler.status()["models"]["a"]["state"] == "resident"


async def test_no_scheduler_answers_503() -> None:
    """A server without a scheduler answers 503 to an admin (and still 401 to anyone else)."""
    async with client_for(None) as client:
        assert (await client.get("/api/models/status", headers=ADMIN)).status_code == 503
        assert (await client.get("/api/models/status")).status_code == 401
