"""From streamed answer text to speakable pieces: the first clause as early as it sounds natural, then
sentences. Markdown is made speakable (emphasis and list marks dropped, links read as their text, bare
URLs as their site), code blocks are skipped. Pure and incremental.

Why clause-first: Piper synthesizes one whole piece per run, so time to first audio grows with the
first piece's length; a 4-6 word opening is ~60-100 ms of synthesis, a 15-word sentence ~300 ms. The
cap (8 words) is not lower because a cut inside a clause is heard at the seam (docs/performance.md); a cut
is never left on a word that leans on the next ("the", "of", a number): it moves on, 3 words at most.
Sentence-only chunking also stalls on replies that never end a sentence (the small model rambles), so
the caller can `force()` a cut after a time limit.
"""

from __future__ import annotations

import re

FENCE = "```"
CLAUSE_END = ",;:.!?"
SENTENCE_END = ".!?"
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "approx", "no"})
# Words that lean on the next one: a first piece cut after one ("The sun rises in the" | "east.") is
# spoken with a falling end mid-phrase. The cut moves on past them, at most FIRST_STRETCH more words.
LEANING = frozenset(
    (  # noqa: SIM905 (a list of 80 one-word strings reads worse)
        "a an the of in on at to for with by from about as into onto over under than and or but nor so if "
        "is are was were be been am has have had do does did will would can could should may might must "
        "not no my your his her its our their this that these those which who whose what how where when why "
        "very i you he she we they"
    ).split()
)
FIRST_STRETCH = 3

_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?://|www\.)([^/\s]+)\S*")
_LINE_MARK = re.compile(r"(?m)^\s*(?:#{1,6}\s+|[-*+•]\s+|\d+[.)]\s+|>\s*)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)")
_NOT_SPOKEN = re.compile(r"[^\w\s.,;:!?'\"()%$€£&+/-]")


def speakable(text: str) -> str:
    """Markdown and symbols -> plain words a TTS engine reads well."""
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(lambda m: m.group(1).removeprefix("www."), text)
    text = _LINE_MARK.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _NOT_SPOKEN.sub(" ", text)  # emoji, arrows, table bars...
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return " ".join(text.split())


def _leans(piece: str) -> bool:
    """Whether the piece's last word needs the next one: a function word or a number ("7" | "days")."""
    last = piece.split()[-1].strip("\"'()").lower()
    return last in LEANING or last.replace(",", "").replace(".", "").isdigit()


def _word_count(text: str) -> int:
    return len(text.split())


class SpeechChunker:
    __slots__ = ("first_min_words", "first_max_words", "max_words", "_buffer", "_in_code", "_first_done")

    def __init__(self, *, first_min_words: int = 3, first_max_words: int = 8, max_words: int = 40) -> None:
        self.first_min_words = first_min_words
        self.first_max_words = first_max_words
        self.max_words = max_words
        self._buffer = ""
        self._in_code = False
        self._first_done = False

    @property
    def pending_words(self) -> int:
        return _word_count(self._buffer)

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        self._strip_code()
        pieces = []
        while (cut := self._find_cut()) is not None:
            pieces += self._emit(cut)
        return pieces

    def force(self) -> list[str]:
        """Time limit reached: cut at the last whole word, if there are enough words to sound right."""
        if self.pending_words <= self.first_min_words:
            return []
        cut = self._buffer.rstrip().rfind(" ")
        return self._emit(cut) if cut > 0 else []

    def flush(self) -> list[str]:
        """End of the answer: whatever is left (outside code) is the last piece."""
        if self._in_code:
            self._buffer = ""
        self._buffer = self._buffer.replace("`" * 3, "")
        return self._emit(len(self._buffer))

    def _emit(self, cut: int) -> list[str]:
        piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
        spoken = speakable(piece)
        if not spoken or not any(ch.isalnum() for ch in spoken):
            return []
        self._first_done = True
        return [spoken]

    def _strip_code(self) -> None:
        """Drop fenced code blocks (never spoken); hold back a possible partial fence."""
        out = []
        text = self._buffer
        while True:
            idx = text.find(FENCE)
            if idx < 0:
                break
            if not self._in_code:
                out.append(text[:idx])
            text = text[idx + len(FENCE) :]
            self._in_code = not self._in_code
        if self._in_code:
            keep = len(text) - len(text.rstrip("`"))
            text = text[len(text) - keep :] if keep else ""
        out.append(text)
        self._buffer = "".join(out)

    def _find_cut(self) -> int | None:
        """End index of the next piece, or None to wait for more text."""
        text = self._buffer
        words = 0
        in_word = False
        first = not self._first_done
        for i, ch in enumerate(text):
            if ch.isspace():
                if ch == "\n" and words >= 1 and text[:i].strip():
                    return i + 1  # a line (list item, heading) is a piece of its own
                in_word = False
                continue
            if not in_word:
                words += 1
                in_word = True
                if first and words > self.first_max_words:
                    cut = text.rfind(" ", 0, i) + 1
                    if words > self.first_max_words + FIRST_STRETCH or not _leans(text[:cut]):
                        return cut
                if words > self.max_words:
                    return text.rfind(" ", 0, i) + 1
            ends = CLAUSE_END if first else SENTENCE_END
            if ch in ends and i + 1 < len(text) and text[i + 1].isspace():
                if first and words < self.first_min_words:
                    continue
                if ch == "." and self._abbreviation(text, i):
                    continue
                return i + 1
            long_sentence = not first and words >= self.max_words * 3 // 4
            if long_sentence and ch in ",;:" and i + 1 < len(text) and text[i + 1].isspace():
                return i + 1  # a very long sentence: break at a clause
        return None

    @staticmethod
    def _abbreviation(text: str, dot: int) -> bool:
        start = max(text.rfind(" ", 0, dot), text.rfind("\n", 0, dot)) + 1
        word = text[start:dot].lower().strip("(\"'")
        return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())
