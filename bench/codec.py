"""Cost of the two wire encodings per typical message: `python -m bench.codec`.

Why: every token and every 20 ms audio frame of every session passes through encode_frame on one side
and decode_frame on the other, so the per-message cost bounds how many sessions one core can serve, and
it decides whether JSON (for debugging) may stay a first-class encoding. Timings are timeit batches
(gc off, the real call inlined in the loop); each batch round times every message in both encodings
back to back, so the JSON/msgpack ratio is taken within a round and is robust to the machine's drift.
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
from dataclasses import dataclass
from typing import Any

from bench.stats import markdown_table, percentile
from realtime.protocol import server_events as ev
from realtime.protocol.client_events import ConversationItemCreate, InputText, parse_client_event
from realtime.protocol.codec import Encoding, decode_frame, encode_frame
from realtime.protocol.fields import Fields

MAX_SIZE = 1 << 20
AUDIO_FRAME = random.Random(0).randbytes(640)  # 20 ms of 16 kHz mono PCM16; random, so nothing compresses it
ANSWER = (
    "Tomorrow in Paris it will be mostly sunny, with a high of twenty-one degrees and a light breeze from the "
    "west. Rain is not expected before the weekend, so it is a good day for a walk along the river. "
    "Take a light jacket for the evening, when it cools down to about twelve degrees."
)


@dataclass(frozen=True, slots=True)
class Case:
    """One message and the statement the receiving side runs on its bytes (`data`, `enc` in scope)."""

    name: str
    wire: dict[str, Any]
    receive: str


CASES = (
    Case(
        "response.text.delta (server→client)",
        ev.text_delta("resp_2", "item_3", " there").to_wire(1234),
        "decode_frame(data, enc, max_size=MAX_SIZE)",
    ),
    Case(
        "conversation.item.create (client→server, + parse_client_event)",
        ConversationItemCreate("user", (InputText("What's the weather like in Paris tomorrow?"),), "c2").to_wire(),
        "parse_client_event(decode_frame(data, enc, max_size=MAX_SIZE), base64_binary=b64)",
    ),
    Case(
        "response.done (server→client, 270-char answer)",
        ev.response_done(
            "resp_2",
            "item_3",
            "completed",
            text=ANSWER,
            reasoning="",
            usage={"input_tokens": 31, "output_tokens": 58},
            metrics={"first_token_ms": 84, "first_text_ms": 140, "total_ms": 910, "rtt_ms": 3},
        ).to_wire(1290),
        "decode_frame(data, enc, max_size=MAX_SIZE)",
    ),
    Case(
        "audio frame, 640 B PCM16 (+ Fields.binary)",
        {"type": "input_audio_buffer.append", "audio": AUDIO_FRAME},
        "Fields(decode_frame(data, enc, max_size=MAX_SIZE), base64_binary=b64).binary('audio', max_size=MAX_SIZE)",
    ),
)


@dataclass
class Timings:
    encode_us: list[float]
    decode_us: list[float]

    def total(self, i: int) -> float:
        return self.encode_us[i] + self.decode_us[i]


def _timers(case: Case, enc: Encoding) -> tuple[timeit.Timer, timeit.Timer, int]:
    data = encode_frame(case.wire, enc)
    scope = {
        "encode_frame": encode_frame,
        "decode_frame": decode_frame,
        "parse_client_event": parse_client_event,
        "Fields": Fields,
        "MAX_SIZE": MAX_SIZE,
        "wire": case.wire,
        "data": data,
        "enc": enc,
        "b64": enc is Encoding.JSON,
    }
    exec(case.receive, dict(scope))  # fail fast if the receiving statement does not accept the bytes
    size = len(data) if isinstance(data, bytes) else len(data.encode())
    return timeit.Timer("encode_frame(wire, enc)", globals=scope), timeit.Timer(case.receive, globals=scope), size


def run(batches: int, number: int) -> str:
    encodings = (Encoding.MSGPACK, Encoding.JSON)
    timers = {(c.name, e): _timers(c, e) for c in CASES for e in encodings}
    results = {key: Timings([], []) for key in timers}
    for _ in range(batches):
        for key, (encode, decode, _) in timers.items():
            results[key].encode_us.append(encode.timeit(number) / number * 1e6)
            results[key].decode_us.append(decode.timeit(number) / number * 1e6)
    rows = []
    for case in CASES:
        mp, js = results[(case.name, Encoding.MSGPACK)], results[(case.name, Encoding.JSON)]
        ratios = [js.total(i) / mp.total(i) for i in range(batches)]
        for enc, t in ((Encoding.MSGPACK, mp), (Encoding.JSON, js)):
            totals = [t.total(i) for i in range(batches)]
            rows.append(
                [
                    case.name if enc is Encoding.MSGPACK else "",
                    enc.value,
                    str(timers[(case.name, enc)][2]),
                    f"{percentile(t.encode_us, 50):.2f} / {percentile(t.encode_us, 90):.2f}",
                    f"{percentile(t.decode_us, 50):.2f} / {percentile(t.decode_us, 90):.2f}",
                    f"{percentile(totals, 50):.2f} / {percentile(totals, 90):.2f}",
                    (
                        f"{percentile(ratios, 50):.2f} ({percentile(ratios, 10):.2f}–{percentile(ratios, 90):.2f})"
                        if enc is Encoding.JSON
                        else ""
                    ),
                ]
            )
    header = [
        "message",
        "encoding",
        "bytes",
        "encode µs p50 / p90",
        "decode µs p50 / p90",
        "enc+dec µs p50 / p90",
        "JSON/msgpack enc+dec, p50 (p10–p90)",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="timed batches per message and encoding")
    parser.add_argument("--number", type=int, default=2000, help="calls per batch")
    args = parser.parse_args(argv)
    print(f"codec: {args.batches} batches x {args.number} calls per message, encoding and direction", flush=True)
    print(run(args.batches, args.number))
    return 0


if __name__ == "__main__":
    sys.exit(main())
