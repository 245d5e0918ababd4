"""Is the seam after the first spoken piece heard? `python -m bench.first_piece_seam [--caps 5,8] [--draws 4]`.

Why: the first piece is cut early for latency (realtime/stages/chunker.py), and Piper speaks each piece
as a whole utterance, with a falling end. A cut inside a clause may then be misheard. This plays short
replies cut as the server would cut them (each piece synthesized apart, with Piper's usual random
prosody, then joined), has Whisper (the embedded base model) transcribe the joined audio, and counts
replies whose word error rate exceeds 0.2: the bar that tests/test_voice_out.py sets for spoken replies.
`--comma` also tries handing Piper a piece cut mid-clause with a trailing comma (a continuation tone).
"""

from __future__ import annotations

import argparse

import numpy as np
import soxr

from realtime.config import load_settings
from realtime.stages.chunker import SpeechChunker
from tests.support.speech import _voice, voice_path, wer

REPLIES = [
    "You said: What is the capital of Norway?",
    "You said: How do I bake bread at home?",
    "You said: Which animals live in the desert?",
    "You said: When does the summer holiday start?",
    "You said: What is the tallest mountain in Europe?",
    "You said: Where do penguins live in the wild?",
]


def pieces(text: str, cap: int) -> list[str]:
    """The text as the speaker's chunker cuts it when it streams in word by word."""
    chunker = SpeechChunker(first_max_words=cap)
    out = [p for word in text.split(" ") for p in chunker.feed(word + " ")]
    return out + chunker.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", default="5,8", help="first-piece word caps to compare")
    parser.add_argument("--draws", type=int, default=4, help="random syntheses per reply")
    parser.add_argument("--comma", action="store_true", help="also: a comma after a piece cut mid-clause")
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    settings = load_settings()
    whisper = WhisperModel(str(settings.models_dir / "whisper-base"), device="cpu", compute_type="int8")
    voice = _voice(str(voice_path()))

    def speak(text: str) -> np.ndarray:
        # not tests.support.speech.synthesize: it caches by text, so every draw would be the same one
        audio = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text)])
        return soxr.resample(audio, voice.config.sample_rate, 16_000).astype(np.float32)

    def hear(audio: np.ndarray) -> str:
        segments, _ = whisper.transcribe(audio, language="en", beam_size=5)
        return " ".join(s.text for s in segments)

    variants = [(int(c), False) for c in args.caps.split(",")]
    if args.comma:
        variants += [(int(c), True) for c in args.caps.split(",")]
    print("| first-piece cap | comma | replies misheard (WER > 0.2) | examples |")
    print("|---|---|---|---|")
    for cap, comma in variants:
        misheard: list[str] = []
        total = 0
        for reply in REPLIES:
            cut = pieces(reply, cap)
            for _ in range(args.draws):
                spoken = [p + ("," if comma and p[-1].isalnum() else "") for p in cut]
                heard = hear(np.concatenate([speak(p) for p in spoken]))
                total += 1
                if wer(reply, heard) > 0.2:
                    misheard.append(f"{' | '.join(cut)} -> {heard.strip()}")
        examples = "; ".join(dict.fromkeys(misheard))[:300]
        print(f"| {cap} | {'yes' if comma else 'no'} | {len(misheard)} of {total} | {examples} |")


if __name__ == "__main__":
    main()
