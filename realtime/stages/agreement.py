"""LocalAgreement-2 on token ids: a word is committed once two consecutive hypotheses agree on it.

Hypotheses are decoded with the committed tokens forced as their prefix, so every hypothesis starts
with them and committed words can never be retracted. Only whole words well inside both hypotheses
are committed: a word counts once two more words have started after it in both (the last word of a
hypothesis is often cut mid-way by the end of the audio, and the one before it still shifts:
"sand s" becomes "sandcastle").
"""

from __future__ import annotations

from collections.abc import Callable


class LocalAgreement:
    __slots__ = ("_word_start", "stable", "tail")

    def __init__(self, word_start: Callable[[int], bool]) -> None:
        self._word_start = word_start
        self.stable: list[int] = []
        self.tail: list[int] = []  # the newest hypothesis beyond `stable`: shown as unstable text

    def update(self, hypothesis: list[int]) -> list[int]:
        """Feed a hypothesis (which starts with `stable`); returns the tokens newly committed."""
        n = len(self.stable)
        if hypothesis[:n] != self.stable:
            # Not decoded with the forced prefix (should not happen): keep what is committed.
            return []
        new, prev = hypothesis[n:], self.tail
        common = 0
        for a, b in zip(new, prev, strict=False):
            if a != b:
                break
            common += 1
        cut = 0
        limit = min(common, self._second_last_word(new), self._second_last_word(prev))
        for k in range(limit, 0, -1):
            if self._word_start(new[k]) and self._word_start(prev[k]):
                cut = k
                break
        committed = new[:cut]
        self.stable.extend(committed)
        self.tail = new[cut:]
        return committed

    def _second_last_word(self, tokens: list[int]) -> int:
        """Index of the start of the second-to-last word (0 if there are fewer than two)."""
        starts = [i for i, t in enumerate(tokens) if self._word_start(t)]
        return starts[-2] if len(starts) >= 2 else 0

    def reset(self) -> None:
        self.stable = []
        self.tail = []
