"""Client-side helpers for voice tests: open a voice session, stream audio on a clock, collect events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from realtime.client import RealtimeClient
from tests.support.server import ServerProcess
from tests.support.speech import chunks


async def connect_voice(server: ServerProcess, rate: int, user: str = "alice", **session: Any) -> RealtimeClient:
    """A session whose microphone runs at `rate` (plus any other session settings)."""
    client = await RealtimeClient.connect(server.ws_url, server.token(user))
    await client.send({"type": "session.update", "session": {"input_audio_format": {"sample_rate": rate}, **session}})
    updated = await client.recv()
    assert updated["type"] == "session.updated", updated
    return client


async def stream_audio(
    client: RealtimeClient, audio: np.ndarray, rate: int, speed: float = 1.0, frame_ms: int = 20
) -> None:
    """Send audio in small frames on a clock running `speed` times real time."""
    started = time.monotonic()
    for i, frame in enumerate(chunks(audio, rate, frame_ms)):
        await client.send({"type": "input_audio_buffer.append", "audio": frame})
        await asyncio.sleep(max(0.0, started + (i + 1) * frame_ms / 1000 / speed - time.monotonic()))


async def events_until(client: RealtimeClient, kind: str) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, event) pairs up to and including the first event of type `kind`."""
    out = []
    while True:
        event = await client.recv()
        out.append((time.monotonic(), event))
        if event["type"] == kind:
            return out
