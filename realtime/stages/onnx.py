"""One way to open a small CPU model with onnxruntime: a fixed thread count and no spinning.

onnxruntime's worker threads spin while waiting for work by default; on a 2-core box that steals the
cycles Whisper, Piper and llama.cpp need (a llama.cpp step right after an onnx run was measurably slower,
shared/notes/latency.md). onnxruntime is imported here, not at module load, so importing a stage stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(path: Path, *, threads: int = 1) -> Any:
    """An `onnxruntime.InferenceSession` on the CPU with `threads` intra-op threads, none spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
