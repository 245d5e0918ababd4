"""Two server processes behind nginx, one PostgreSQL: what works across nodes, `python -m bench.scale_out`.

It starts, all on loopback: the embedded PostgreSQL once, two `python -m realtime serve` processes
(node_a, node_b) using it through REALTIME_DATABASE_URL with one shared JWT secret, the scripted fake
LLM (tests/support/fake_ollama.py) and nginx from Debian (`apt-get install nginx-light`) as a child
process with a generated config (never as a system service). Then it checks, and prints as a table:

  accounts       an account signed up through node_a logs in through node_b; a token from one node is
                 accepted by the other; a websocket ticket issued by node_a opens a session on node_b
  history        a conversation told to node_b is continued on node_a (session.update conversation_id:
                 the model there sees the earlier turns) and read back through either node
  stickiness     a new session lands on either node; the proxy answers with cookie `rt_node` naming it;
                 a dropped link resumed with that cookie reaches the node holding the session (all
                 events replayed once); the same resume sent to the other node gets resume_failed
  failover       the node holding a dropped session is killed (SIGKILL); the resume, still pinned to it,
                 is passed to the surviving node by nginx, which answers resume_failed and a new
                 session; the stored conversation is intact and continues there

Routing (docs/scaling.md): a request without the cookie goes round-robin to any live node; every
response carries `Set-Cookie: rt_node=<node that answered>` and `X-Realtime-Node`. A request with the
cookie goes to that node, and to the other one only when that node cannot be reached (`backup`). A
browser sends the cookie on its websocket handshakes by itself; a program keeps it and sends it back.

    .venv/bin/python -m bench.scale_out [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import connect

from bench.stats import markdown_table
from realtime.client import MAX_CLIENT_MESSAGE, RealtimeClient
from realtime.protocol.codec import Encoding

NODE_HEADER = "X-Realtime-Node"
NODE_COOKIE = "rt_node"
PASSWORD = "correct horse battery"


def nginx_binary() -> str | None:
    """nginx from PATH or Debian's /usr/sbin (not on a non-root PATH); None when not installed."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    return found


def nginx_config(listen_port: int, nodes: dict[str, int], prefix: Path) -> str:
    """The proxy: `rt_node` cookie -> that node (the other as backup); no cookie -> round-robin."""
    names = list(nodes)

    def server(name: str, *, backup: bool = False) -> str:
        return f"server 127.0.0.1:{nodes[name]} max_fails=1 fail_timeout=10s{' backup' if backup else ''};"

    pinned = "\n".join(
        f"    upstream {name} {{ {server(name)} "
        + " ".join(server(other, backup=True) for other in names if other != name)
        + " }"
        for name in names
    )
    any_node = " ".join(server(name) for name in names)
    cookie_map = "\n".join(f"        {name} {name};" for name in names)
    # $upstream_addr lists every server tried ("A, B" after a failover): the last one answered
    addr_map = "\n".join(f'        "~127\\.0\\.0\\.1:{port}$" {name};' for name, port in nodes.items())
    user = "user root;" if os.geteuid() == 0 else ""
    tmp = prefix / "tmp"
    return f"""
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 4096; }}
http {{
    # $uri, not $request: the query holds resume secrets, tickets and tokens
    log_format nodes '$remote_addr "$request_method $uri" $status '
                     'upstream=$upstream_addr node=$rt_node cookie=$cookie_rt_node';
    access_log {prefix}/access.log nodes;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" close;
    }}
    upstream any_node {{ {any_node} }}
{pinned}
    map $cookie_rt_node $pinned_group {{
{cookie_map}
        default any_node;
    }}
    map $upstream_addr $rt_node {{
{addr_map}
        default "";
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://$pinned_group;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            proxy_next_upstream error timeout;
            add_header {NODE_HEADER} $rt_node always;
            add_header Set-Cookie "{NODE_COOKIE}=$rt_node; Path=/; HttpOnly; SameSite=Lax" always;
        }}
    }}
}}
"""


class Nginx:
    """nginx as a child process with a generated config in its own prefix directory."""

    def __init__(self, binary: str, port: int, nodes: dict[str, int], prefix: Path) -> None:
        self.binary, self.port, self.nodes, self.prefix = binary, port, nodes, prefix
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Nginx:
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(nginx_config(self.port, self.nodes, self.prefix))
        command = [self.binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"), "-c", str(conf)]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its config: {check.stderr}")
        self.process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited: {self.process.stderr.read().decode() if self.process.stderr else ''}"
                )
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(self.url + "/healthz", timeout=1.0)
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start listening")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text() if path.exists() else ""


# ---- through the proxy ---------------------------------------------------------------------------------


def http(proxy: Nginx, node: str | None = None, token: str | None = None) -> httpx.AsyncClient:
    """An HTTP client for the proxy, pinned to `node` by the cookie (None: whichever node nginx picks)."""
    cookies = {NODE_COOKIE: node} if node else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return httpx.AsyncClient(base_url=proxy.url, cookies=cookies, headers=headers, timeout=15)


@dataclass
class Link:
    client: RealtimeClient
    node: str  # the node that answered the handshake (X-Realtime-Node)
    cookie_node: str | None  # what the proxy's Set-Cookie pins this client to


async def open_session(
    proxy: Nginx,
    token: str | None,
    *,
    node: str | None = None,
    resume: tuple[str, str, int] | None = None,
    query: dict[str, str] | None = None,
) -> Link:
    """A realtime session through the proxy (msgpack), pinned with the cookie when `node` is given.

    Without `resume` the first event (session.created, or an error) is read into `client.session`."""
    params = dict(query or {})
    if resume is not None:
        params |= {"resume": resume[0], "resume_secret": resume[1], "last_seq": str(resume[2])}
    url = proxy.ws_url + (f"?{urlencode(params)}" if params else "")
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if node:
        headers["Cookie"] = f"{NODE_COOKIE}={node}"
    ws = await connect(
        url,
        subprotocols=[Encoding.MSGPACK.subprotocol],  # type: ignore[list-item]
        additional_headers=headers,
        max_size=MAX_CLIENT_MESSAGE,
        ping_interval=None,
        open_timeout=15,
    )
    assert ws.response is not None
    answered = ws.response.headers.get(NODE_HEADER, "")
    set_cookie = ws.response.headers.get("Set-Cookie", "")
    pinned = set_cookie.split(";", 1)[0].partition("=")[2] or None
    client = RealtimeClient(ws, Encoding.MSGPACK, recv_timeout=30)
    if resume is not None:
        client.last_seq = resume[2]
    else:
        first = await client.recv()
        if first.get("type") == "session.created":
            client.session = first["session"]
        else:
            client._pending = first
    return Link(client, answered, pinned)


def drop(link: Link) -> None:
    """Lose the link without a close frame (the TCP connection to the proxy just ends)."""
    link.client.ws.transport.abort()


async def signup(proxy: Nginx, node: str, username: str) -> tuple[dict[str, Any], str]:
    async with http(proxy, node) as client:
        resp = await client.post("/api/auth/signup", json={"username": username, "password": PASSWORD})
        resp.raise_for_status()
        return resp.json(), resp.headers.get(NODE_HEADER, "")


async def login(proxy: Nginx, node: str, username: str) -> tuple[int, str, str | None]:
    async with http(proxy, node) as client:
        resp = await client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        token = resp.json().get("access_token") if resp.status_code == 200 else None
        return resp.status_code, resp.headers.get(NODE_HEADER, ""), token


async def conversation_id(client: RealtimeClient) -> str:
    await client.send({"type": "session.update", "session": {}})
    return (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]


async def stored_messages(proxy: Nginx, node: str, token: str, cid: str, count: int) -> tuple[list[dict], str]:
    """The conversation's messages read through `node`, waiting (bounded) for the asynchronous writer."""
    async with http(proxy, node, token) as client:
        messages: list[dict[str, Any]] = []
        answered = ""
        for _ in range(100):
            resp = await client.get(f"/api/conversations/{cid}")
            answered = resp.headers.get(NODE_HEADER, "")
            if resp.status_code == 200:
                messages = resp.json()["messages"]
                if len(messages) >= count:
                    break
            await asyncio.sleep(0.1)
        return messages, answered


async def use_model(client: RealtimeClient, model: str) -> None:
    await client.send({"type": "session.update", "session": {"model": model}})
    await client.recv_until("session.updated")


async def continue_conversation(client: RealtimeClient, cid: str) -> dict[str, Any]:
    await client.send({"type": "session.update", "session": {"conversation_id": cid}})
    return (await client.recv_until("session.updated"))[-1]["session"]


async def resume_and_collect(
    proxy: Nginx, token: str, args: tuple[str, str, int], node: str | None
) -> tuple[Link, list[dict[str, Any]]]:
    """Resume through the proxy; the events up to session.resumed, or up to session.created when refused."""
    link = await open_session(proxy, token, node=node, resume=args)
    events: list[dict[str, Any]] = []
    while True:
        event = await link.client.recv()
        events.append(event)
        if event["type"] in ("session.resumed", "session.created"):
            return link, events


async def session_on(proxy: Nginx, token: str, node: str, tries: int = 8) -> Link:
    """A fresh session (no cookie) that the round-robin happened to put on `node`."""
    for _ in range(tries):
        link = await open_session(proxy, token)
        if link.node == node:
            return link
        await link.client.close()
    raise AssertionError(f"round-robin never chose {node}")


# ---- the demonstration (the test runs the same steps) ----------------------------------------------------


@dataclass
class Row:
    check: str
    result: str
    ok: bool
    ms: float


async def demonstrate(proxy: Nginx, kill: dict[str, Any]) -> list[Row]:
    """Every check of the module docstring, in order; `kill[node]()` kills that node (for failover)."""
    rows: list[Row] = []

    def row(check: str, result: str, ok: bool, since: float) -> None:
        rows.append(Row(check, result, ok, (time.monotonic() - since) * 1000))

    t = time.monotonic()
    account, via = await signup(proxy, "node_a", "scaler")
    status, via_b, token = await login(proxy, "node_b", "scaler")
    row("sign up via node_a, log in via node_b", f"signup via {via}, login {status} via {via_b}", status == 200, t)
    assert token is not None
    t = time.monotonic()
    async with http(proxy, "node_b", account["access_token"]) as client:
        me = await client.get("/api/auth/me")
    row(
        "token from node_a accepted by node_b",
        f"/api/auth/me {me.status_code} via {me.headers.get(NODE_HEADER)}",
        me.status_code == 200,
        t,
    )
    t = time.monotonic()
    async with http(proxy, "node_a", token) as client:
        ticket = (await client.post("/api/auth/ticket")).json()["ticket"]
    link = await open_session(proxy, None, node="node_b", query={"ticket": ticket})
    ok = link.node == "node_b" and link.client.session.get("history_stored") is True
    row("ticket from node_a opens a session on node_b", f"session on {link.node}", ok, t)
    await link.client.close()

    t = time.monotonic()
    link = await open_session(proxy, token, node="node_b")
    first = await link.client.ask("the secret word is papaya")
    cid = await conversation_id(link.client)
    await link.client.close()
    stored, _ = await stored_messages(proxy, "node_b", token, cid, 2)
    link = await open_session(proxy, token, node="node_a")
    session = await continue_conversation(link.client, cid)
    await use_model(link.client, "recall")
    recalled = await link.client.ask("what was the word?")
    await link.client.close()
    messages, via = await stored_messages(proxy, "node_b", token, cid, 4)
    ok = (
        first.text == "You said: the secret word is papaya"
        and session["conversation_id"] == cid
        and recalled.text == "You heard: You said: the secret word is papaya"
        and [m["seq"] for m in messages] == [1, 2, 3, 4]
        and len(stored) >= 2
    )
    row(
        "history: told node_b, continued on node_a, read via node_b",
        f"{link.node} recalled {recalled.text!r}; {len(messages)} messages via {via}",
        ok,
        t,
    )

    for node in ("node_a", "node_b"):
        t = time.monotonic()
        link = await session_on(proxy, token, node)
        await use_model(link.client, "echo")
        await link.client.ask("remember me")
        args = link.client.resume_args()
        drop(link)
        await asyncio.sleep(0.3)
        again, events = await resume_and_collect(proxy, token, args, link.cookie_node)
        resumed = events[-1]
        ok = (
            link.cookie_node == node
            and again.node == node
            and resumed["type"] == "session.resumed"
            and resumed["session"]["id"] == args[0]
        )
        row(f"resume pinned by cookie reaches {node}", f"{resumed['type']} on {again.node}", ok, t)
        t = time.monotonic()
        other = "node_b" if node == "node_a" else "node_a"
        args = again.client.resume_args()
        drop(again)
        await asyncio.sleep(0.3)
        wrong, events = await resume_and_collect(proxy, token, args, other)
        codes = [e.get("error", {}).get("code") for e in events if e["type"] == "error"]
        ok = wrong.node == other and codes == ["resume_failed"] and events[-1]["type"] == "session.created"
        row(f"same resume sent to {other} (no stickiness)", f"{', '.join(codes)} + new session on {wrong.node}", ok, t)
        await wrong.client.close()

    t = time.monotonic()
    link = await session_on(proxy, token, "node_a")
    await continue_conversation(link.client, cid)
    await use_model(link.client, "echo")
    await link.client.ask("the colour is teal")
    await stored_messages(proxy, "node_b", token, cid, 6)
    args = link.client.resume_args()
    drop(link)
    kill["node_a"]()
    again, events = await resume_and_collect(proxy, token, args, "node_a")
    codes = [e.get("error", {}).get("code") for e in events if e["type"] == "error"]
    new_session = events[-1]["session"]
    await continue_conversation(again.client, cid)
    await use_model(again.client, "recall")
    recalled = await again.client.ask("and the colour?")
    await again.client.close()
    messages, _ = await stored_messages(proxy, "node_b", token, cid, 8)
    ok = (
        again.node == "node_b"
        and again.cookie_node == "node_b"
        and codes == ["resume_failed"]
        and new_session["id"] != args[0]
        and recalled.text == "You heard: You said: the colour is teal"
        and [m["seq"] for m in messages] == list(range(1, 9))
    )
    row(
        "node_a killed: resume goes to node_b",
        f"{', '.join(codes)} + new session on {again.node}, "
        f"cookie now {again.cookie_node}; history {len(messages)} messages, recalled",
        ok,
        t,
    )
    return rows


# ---- standalone run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def cluster(workdir: Path) -> Iterator[tuple[Nginx, dict[str, Any], dict[str, Any]]]:
    """PostgreSQL, the fake LLM, node_a and node_b, nginx in front; yields (proxy, nodes, kill)."""
    from db import EmbeddedPostgres
    from tests.support.fake_ollama import FakeOllama
    from tests.support.server import ServerProcess, free_port

    binary = nginx_binary()
    if binary is None:
        raise SystemExit("nginx is not installed: apt-get install nginx-light (./dev test does)")
    pg = EmbeddedPostgres(workdir / "pgdata")
    url = pg.start()
    fake = FakeOllama(free_port()).start()
    nodes: dict[str, ServerProcess] = {}
    proxy = None
    try:
        env = {
            "REALTIME_DATABASE_URL": url,
            "REALTIME_OLLAMA_URL": fake.url,
            "REALTIME_LLM_MODEL": "echo",
            "REALTIME_VOICE": "off",
            "REALTIME_TTS_ENGINE": "off",
        }
        for name in ("node_a", "node_b"):
            nodes[name] = ServerProcess(env, workdir / name / "state", workdir / f"{name}.log")
        for node in nodes.values():
            node.start(timeout=120)
        proxy = Nginx(binary, free_port(), {n: p.port for n, p in nodes.items()}, workdir / "nginx").start()
        kill = {name: (lambda p=node: p.stop(signal.SIGKILL)) for name, node in nodes.items()}
        yield proxy, nodes, kill
    finally:
        if proxy is not None:
            proxy.stop()
        for node in nodes.values():
            node.stop()
        fake.stop()
        pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale_out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, nginx.conf)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        with cluster(workdir) as (proxy, nodes, kill):
            ports = ", ".join(f"{n} :{p.port}" for n, p in nodes.items())
            print(f"[scale-out] nginx :{proxy.port} -> {ports}; one PostgreSQL", flush=True)
            rows = asyncio.run(demonstrate(proxy, kill))
            table = [[r.check, r.result, f"{r.ms:.0f}", "yes" if r.ok else "**NO**"] for r in rows]
            print(markdown_table(["check", "what happened", "ms", "ok"], table), flush=True)
    finally:
        if args.keep:
            print(f"[scale-out] work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
