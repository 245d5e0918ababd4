"""The Pipecat side of bench/pipecat_compare.py: one Pipecat pipeline, driven turn by turn over stdin/stdout.

Runs under the separate Pipecat virtualenv (never our .venv), started by the compare script:

    PIPECAT_PYTHON bench/pipecat_pipeline.py --llm-url URL --whisper-dir D --vad-onnx F --piper-voice V ...

The pipeline is Pipecat's usual local voice bot, built from its own services with our model files:

    AudioFeed -> WhisperSTTService -> user aggregator (SileroVADAnalyzer, speech-timeout turn stop)
              -> OLLamaLLMService (OpenAI-compatible /v1 of the shared LLM server) -> PiperTTSService
              -> assistant aggregator

The user turn ends on the speech-timeout strategy (`--turn-timeout SECONDS` after the VAD stop, with a
transcript) or, with `--turn-timeout smart`, on Pipecat's default smart-turn v3 model.

AudioFeed stands in for an input transport: it pushes 16 kHz mono PCM in 20 ms InputAudioRawFrames on a
real-time clock. An observer timestamps (time.monotonic, the same clock as the parent's) the first
VADUserStoppedSpeakingFrame, TranscriptionFrame, LLMTextFrame, TTSStartedFrame and TTSAudioRawFrame of
each turn. Each turn starts from a fresh context (the LLM service's system instruction only).

Protocol: the child prints `READY {json}` once the pipeline runs; then for each stdin line
`{"pcm": PATH, "speech_end_s": S}` (raw int16 16 kHz mono; S = where the speech ends in it) it plays the
audio, waits for the reply to finish, and prints `RESULT {json}` with times in ms after the speech end.
`quit` (or EOF) ends it. Pipecat logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from importlib import resources
from pathlib import Path

from loguru import logger
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.ollama.llm import OLLamaLLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

IN_RATE = 16_000
OUT_RATE = 24_000
FRAME_MS = 20
QUIET_S = 0.4  # the reply is over: LLM done and no TTS audio for this long
TURN_TIMEOUT_S = 30.0


class AudioFeed(FrameProcessor):
    """The input transport's job: microphone audio into the pipeline, 20 ms at a time, at real-time pace."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

    async def play(self, pcm: bytes) -> float:
        """Push `pcm` frame by frame on the wall clock; returns the monotonic time it started."""
        step = IN_RATE * FRAME_MS // 1000 * 2
        started = time.monotonic()
        for i in range(0, len(pcm), step):
            frame = InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=IN_RATE, num_channels=1)
            await self.push_frame(frame)
            due = started + (i // step + 1) * FRAME_MS / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        return started


class TurnClock(BaseObserver):
    """First time (monotonic) each milestone frame is pushed in the current turn."""

    MILESTONES = {
        VADUserStoppedSpeakingFrame: "vad_stop",
        TranscriptionFrame: "transcript_at",
        LLMTextFrame: "first_token",
        TTSStartedFrame: "tts_start",
        TTSAudioRawFrame: "first_audio",
    }

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.times: dict[str, float] = {}
        self.transcript = ""
        self.reply = ""
        self.first_piece: str | None = None
        self.llm_done = False
        self.last_audio = 0.0
        self.audio_bytes = 0
        self.changed = asyncio.Event()

    async def on_push_frame(self, data: FramePushed) -> None:
        frame, now = data.frame, time.monotonic()
        if not data.first_push:
            return
        for kind, name in self.MILESTONES.items():
            if isinstance(frame, kind):
                self.times.setdefault(name, now)
        if isinstance(frame, TranscriptionFrame):
            self.transcript += frame.text
        elif isinstance(frame, LLMTextFrame):
            self.reply += frame.text
        elif isinstance(frame, TTSAudioRawFrame):
            self.last_audio = now
            self.audio_bytes += len(frame.audio)
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.llm_done = True
        elif isinstance(frame, TTSTextFrame) and self.first_piece is None:
            self.first_piece = frame.text
        elif isinstance(frame, TTSStoppedFrame):
            self.last_audio = now
        self.changed.set()

    async def reply_over(self) -> None:
        """Until the LLM has finished and TTS has been quiet for QUIET_S."""
        while not (self.llm_done and "first_audio" in self.times and time.monotonic() - self.last_audio > QUIET_S):
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), QUIET_S)
            except TimeoutError:
                pass


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build(args: argparse.Namespace) -> tuple[PipelineWorker, AudioFeed, TurnClock, LLMContext, dict]:
    vad = SileroVADAnalyzer(params=VADParams(stop_secs=args.stop_secs))
    vad._model = SileroOnnxModel(args.vad_onnx, force_onnx_cpu=True)  # our file (byte-identical to Pipecat's)
    stt = WhisperSTTService(
        device="cpu",
        compute_type=args.compute_type,
        settings=WhisperSTTService.Settings(model=args.whisper_dir, language=Language.EN),
    )
    voice = Path(args.piper_voice)
    tts = PiperTTSService(download_dir=voice.parent, settings=PiperTTSService.Settings(voice=voice.stem))
    llm = OLLamaLLMService(
        base_url=args.llm_url.rstrip("/") + "/v1",
        settings=OLLamaLLMService.Settings(
            model=args.model,
            system_instruction=args.system,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
        ),
    )
    context = LLMContext()
    if args.turn_timeout == "smart":  # Pipecat's default: the smart-turn v3 model decides after the VAD stop
        strategies = UserTurnStrategies()
    else:
        timeout = float(args.turn_timeout)
        strategies = UserTurnStrategies(stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=timeout)])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=vad, user_turn_strategies=strategies)
    )
    feed = AudioFeed()
    clock = TurnClock()
    pipeline = Pipeline([feed, stt, aggregators.user(), llm, tts, aggregators.assistant()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=IN_RATE, audio_out_sample_rate=OUT_RATE),
        observers=[clock],
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    info = {
        "vad": {
            "confidence": vad.params.confidence,
            "start_secs": vad.params.start_secs,
            "stop_secs": vad.params.stop_secs,
        },
        "vad_onnx_sha256": sha256(args.vad_onnx),
        "vad_packaged_sha256": sha256(str(resources.files("pipecat.audio.vad.data") / "silero_vad.onnx")),
        "turn_timeout": args.turn_timeout,
    }
    return worker, feed, clock, context, info


async def turn(feed: AudioFeed, clock: TurnClock, context: LLMContext, line: str) -> dict:
    request = json.loads(line)
    pcm = await asyncio.to_thread(Path(request["pcm"]).read_bytes)
    context.set_messages([])  # a fresh conversation: the system instruction is the LLM service's
    clock.reset()
    started = await feed.play(pcm)
    speech_end = started + request["speech_end_s"]
    try:
        await asyncio.wait_for(clock.reply_over(), TURN_TIMEOUT_S)
    except TimeoutError:
        pass
    out = {name: (t - speech_end) * 1000 for name, t in clock.times.items()}
    return {
        **out,
        "transcript": clock.transcript.strip(),
        "reply": clock.reply,
        "first_piece": clock.first_piece,
        "audio_bytes": clock.audio_bytes,
    }


async def main_async(args: argparse.Namespace) -> None:
    worker, feed, clock, context, info = build(args)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    run_task = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), 120)
    loop = asyncio.get_running_loop()
    print("READY " + json.dumps(info), flush=True)
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if not line or line == "quit":
                break
            result = await turn(feed, clock, context, line)
            print("RESULT " + json.dumps(result), flush=True)
    finally:
        await worker.cancel()
        await run_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm-url", required=True, help="the Ollama-API server (its /v1 is used)")
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--whisper-dir", required=True, help="a CTranslate2 Whisper model directory")
    parser.add_argument("--vad-onnx", required=True, help="silero_vad.onnx")
    parser.add_argument("--piper-voice", required=True, help="a Piper .onnx voice (its .onnx.json beside it)")
    parser.add_argument("--system", required=True, help="the system prompt")
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument(
        "--compute-type",
        default="int8",
        help="faster-whisper compute type (Pipecat's default: 'default', float32 for these files)",
    )
    parser.add_argument("--stop-secs", type=float, default=0.2, help="VADParams.stop_secs (Pipecat's default 0.2)")
    parser.add_argument(
        "--turn-timeout",
        default="smart",
        help="seconds: a speech-timeout turn stop with this user_speech_timeout after the VAD stop; "
        "'smart' (default, Pipecat's): the smart-turn v3 model decides",
    )
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
