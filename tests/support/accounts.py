"""Accounts made through the real HTTP API, for tests that need a signed-in user."""

from __future__ import annotations

import httpx

from tests.support.server import ServerProcess


async def signed_in(server: ServerProcess, name: str) -> httpx.AsyncClient:
    """A client for a new account `name`: bearer token set, the log-in cookie dropped (so requests carry
    no cookie and need no Origin). The caller closes it."""
    http = httpx.AsyncClient(base_url=server.url, timeout=120.0)
    resp = await http.post("/api/auth/signup", json={"username": name, "password": "correct horse battery"})
    assert resp.status_code == 201, resp.text
    http.cookies.clear()
    http.headers["Authorization"] = "Bearer " + resp.json()["access_token"]
    return http
