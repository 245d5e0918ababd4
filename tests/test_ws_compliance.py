"""Websocket compliance: the Autobahn TestSuite cases (run by `kosoku`) against our websocket stack.

The stack is uvicorn's sans-I/O websocket protocol with our fixes (realtime/ws_protocol.py), under the
limits the server sets: bench/autobahn.py serves an echo route through realtime.cli.uvicorn_config.
Framing, pings, reserved bits and opcodes, fragmentation, UTF-8 and close handling (Autobahn 1.x-7.x,
10.x) run here; 9.x (messages up to 16 MiB, over our 1 MiB limit) and 12.x/13.x (permessage-deflate,
off by default) are run by `python -m bench.autobahn` with the matching options. docs/reliability.md
has every result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.autobahn import COMPRESSION_CASES, LARGE_MESSAGE_CASES, echo_server, run_cases, verdict

pytest.importorskip("kosoku")

# The one known failure, explained in docs/reliability.md: a close frame in the middle of a fragmented
# message is answered 1002 (the `websockets` library treats it as a protocol error) where the case wants
# the close code echoed; RFC 6455 only says endpoints "typically" echo it.
EXPLAINED = {"7.1.5": "FAILED / close WRONG CODE"}


async def test_autobahn_cases_pass_against_our_websocket_layer(tmp_path: Path) -> None:
    """Every Autobahn case outside 9.x/12.x/13.x passes (OK, NON-STRICT or INFORMATIONAL), but the explained one;
    the server logs no error while the cases run."""
    log = tmp_path / "echo.log"
    with echo_server(log=log) as address:
        results = await run_cases(address, None, LARGE_MESSAGE_CASES + COMPRESSION_CASES, parallelism=2)
    assert len(results) == 247
    assert {r.case_id: verdict(r) for r in results if not r.passed} == EXPLAINED
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
