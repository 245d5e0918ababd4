"""Split streamed model output into reasoning and answer, for `<think>...</think>` inline tags.

Tags may arrive split across chunks ("<thi" + "nk>"), so a possible tag prefix at the end of a chunk is
held back until the next chunk decides it. Pure and incremental: feed pieces, get labelled pieces.
"""

from __future__ import annotations

from enum import Enum

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class Part(Enum):
    REASONING = "reasoning"
    ANSWER = "answer"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Feed answer text as it streams; get (Part, text) pieces with the tags removed.

    Leading whitespace of the answer (at the start and right after a reasoning block) is dropped,
    since models put blank lines there that a client would otherwise show or speak.
    """

    __slots__ = ("_buffer", "_in_think", "_answer_started")

    def __init__(self) -> None:
        self._buffer = ""
        self._in_think = False
        self._answer_started = False

    @property
    def in_reasoning(self) -> bool:
        return self._in_think

    def feed(self, text: str) -> list[tuple[Part, str]]:
        self._buffer += text
        out: list[tuple[Part, str]] = []
        while True:
            tag = CLOSE_TAG if self._in_think else OPEN_TAG
            idx = self._buffer.find(tag)
            if idx < 0:
                keep = _partial_suffix(self._buffer, tag)
                ready, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
                self._push(out, ready)
                return out
            self._push(out, self._buffer[:idx])
            self._buffer = self._buffer[idx + len(tag) :]
            self._in_think = not self._in_think
            if not self._in_think:
                self._answer_started = False

    def flush(self) -> list[tuple[Part, str]]:
        """End of stream: whatever was held back is plain text of the current part."""
        out: list[tuple[Part, str]] = []
        self._push(out, self._buffer)
        self._buffer = ""
        return out

    def _push(self, out: list[tuple[Part, str]], text: str) -> None:
        if not text:
            return
        if self._in_think:
            out.append((Part.REASONING, text))
            return
        if not self._answer_started:
            text = text.lstrip()
            if not text:
                return
            self._answer_started = True
        out.append((Part.ANSWER, text))
