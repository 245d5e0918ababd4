// Types of the realtime client (protocol v1, docs/protocol.md). Hand-written; the source is JSDoc-typed
// JavaScript in src/ (no build step).

export type Encoding = "msgpack" | "json";
export declare const PROTOCOL_VERSION: "v1";
export declare const SUBPROTOCOLS: Readonly<Record<Encoding, string>>;
export declare const BINARY_FIELDS: Readonly<Record<string, readonly string[]>>;
export declare const CLIENT_EVENT_TYPES: readonly ClientEvent["type"][];
export declare const SERVER_EVENT_TYPES: readonly KnownServerEvent["type"][];
export declare const SAMPLE_RATES: readonly SampleRate[];
export declare const CLOSE_DEAD_LINK: 4000;
/** Close codes of a lost link (no close frame, or a ping timeout): the session waits for a resume. */
export declare const LOST_LINK_CODES: readonly [1005, 1006, 4000];

export type SampleRate = 8000 | 11025 | 12000 | 16000 | 22050 | 24000 | 32000 | 44100 | 48000;

// ---- settings (§4.1) -------------------------------------------------------------------------------

export interface AudioFormat {
  type?: "pcm16";
  sample_rate: SampleRate;
}

export interface TurnDetection {
  type: "server_vad";
  threshold?: number;
  prefix_padding_ms?: number;
  silence_duration_ms?: number;
  min_speech_duration_ms?: number;
  segment_pause_ms?: number;
  create_response?: boolean;
  interrupt_response?: boolean;
  interrupt_min_speech_ms?: number;
}

export interface InputAudioTranscription {
  language?: string | null;
  partials?: boolean;
}

/** Per-response settings (`response.create.response`); absent: unchanged, null: server default. */
export interface ResponseSettings {
  model?: string;
  instructions?: string | null;
  temperature?: number | null;
  max_output_tokens?: number | null;
  reasoning?: boolean | null;
  /** The user's document library in every response: true (all), false/null (off), or these document ids. */
  library?: boolean | string[] | null;
}

/** `session.update.session`. */
export interface SessionSettings extends ResponseSettings {
  input_audio_format?: AudioFormat | null;
  output_audio_format?: AudioFormat | null;
  turn_detection?: TurnDetection | null;
  input_audio_transcription?: InputAudioTranscription | null;
}

/** The session object of `session.created` / `session.updated` / `session.resumed` (§4.2). */
export interface Session {
  id: string;
  user: string;
  protocol: "v1";
  encoding: Encoding;
  model: string;
  instructions: string | null;
  temperature: number | null;
  max_output_tokens: number | null;
  reasoning: boolean | null;
  input_audio_format?: Required<AudioFormat> | null;
  output_audio_format?: Required<AudioFormat> | null;
  turn_detection?: Required<TurnDetection> | null;
  input_audio_transcription?: { language: string | null; partials: boolean } | null;
  limits: { max_message_size: number; max_text_chars: number; max_response_chars: number };
  conversation_id?: string | null;
  history_stored?: boolean;
  /** with `id`, resumes this session after a lost link (§5.7); keep it private */
  resume_secret?: string;
  /** how long a lost session waits for a resume; null: resume off */
  resume_grace_ms?: number | null;
  ping_interval_ms: number | null;
  ping_timeout_ms: number | null;
  [field: string]: unknown;
}

// ---- client events (§4.1) ------------------------------------------------------------------------

export type TextPart = { type: "input_text" | "output_text"; text: string };
/** What `createItem`/`ask`/`sendText` take as a message's parts: text, an image (JPEG, PNG or WebP bytes), a
 * document (`file`: text, Markdown, HTML, PDF or DOCX bytes, with its name) or recorded speech (PCM16 at the session's input rate, transcribed into the item); images and audio on user
 * messages only. */
export type ContentInput =
  | string
  | { text: string }
  | { image: Uint8Array | ArrayBuffer | ArrayBufferView }
  | { file: Uint8Array | ArrayBuffer | ArrayBufferView; filename?: string; mimeType?: string }
  | { audio: Uint8Array | ArrayBuffer | ArrayBufferView };
export type InputPart =
  | TextPart
  | { type: "input_image"; image: Uint8Array }
  | { type: "input_file"; file: Uint8Array; filename?: string; mime_type?: string }
  | { type: "input_audio"; audio: Uint8Array };

export type ClientEvent =
  | { type: "session.update"; event_id?: string; session: SessionSettings }
  | { type: "conversation.item.create"; event_id?: string; item: { type?: "message"; role: "user" | "assistant" | "system"; content: InputPart[] } }
  | { type: "response.create"; event_id?: string; response?: ResponseSettings }
  | { type: "response.cancel"; event_id?: string; response_id?: string }
  | { type: "input_audio_buffer.append"; event_id?: string; audio: Uint8Array }
  | { type: "input_audio_buffer.commit"; event_id?: string }
  | { type: "input_audio_buffer.clear"; event_id?: string }
  | { type: "conversation.item.truncate"; event_id?: string; item_id: string; content_index?: 0; audio_end_ms: number }
  | { type: "ping"; event_id?: string; ts: number }
  | { type: "pong"; event_id?: string; ts: number };

export declare namespace events {
  function sessionUpdate(session: SessionSettings, eventId?: string): Extract<ClientEvent, { type: "session.update" }>;
  function conversationItemCreate(
    role: "user" | "assistant" | "system",
    content: string | readonly ContentInput[],
    eventId?: string,
  ): Extract<ClientEvent, { type: "conversation.item.create" }>;
  function responseCreate(overrides?: ResponseSettings, eventId?: string): Extract<ClientEvent, { type: "response.create" }>;
  function responseCancel(responseId?: string, eventId?: string): Extract<ClientEvent, { type: "response.cancel" }>;
  function inputAudioAppend(audio: Uint8Array | Int16Array | ArrayBuffer, eventId?: string): Extract<ClientEvent, { type: "input_audio_buffer.append" }>;
  function inputAudioCommit(eventId?: string): Extract<ClientEvent, { type: "input_audio_buffer.commit" }>;
  function inputAudioClear(eventId?: string): Extract<ClientEvent, { type: "input_audio_buffer.clear" }>;
  function conversationItemTruncate(itemId: string, audioEndMs: number, eventId?: string): Extract<ClientEvent, { type: "conversation.item.truncate" }>;
  function ping(ts: number, eventId?: string): Extract<ClientEvent, { type: "ping" }>;
  function pong(ts: number): Extract<ClientEvent, { type: "pong" }>;
  function asBytes(audio: Uint8Array | ArrayBufferView | ArrayBuffer): Uint8Array;
  const CLIENT_EVENT_TYPES: readonly ClientEvent["type"][];
  const SERVER_EVENT_TYPES: readonly KnownServerEvent["type"][];
  const SAMPLE_RATES: readonly SampleRate[];
}

// ---- server events (§4.2) ------------------------------------------------------------------------

interface Envelope<T extends string> {
  type: T;
  event_id: string;
  seq: number;
}

export interface ErrorBody {
  code: string;
  message: string;
  param?: string;
  event_id?: string;
  event_type?: string;
}

export interface ResponseMetrics {
  first_token_ms: number | null;
  first_text_ms: number | null;
  total_ms: number;
  rtt_ms: number | null;
  first_audio_ms?: number | null;
  late_audio_chunks?: number;
  interrupt_to_stop_ms?: number;
  speech_end_to_transcript_ms?: number | null;
  speech_end_to_first_token_ms?: number | null;
  speech_end_to_first_audio_ms?: number | null;
  [metric: string]: number | null | undefined;
}

export type ResponseStatus = "completed" | "cancelled" | "incomplete" | "failed" | "interrupted";

export interface ResponseDone {
  id: string;
  item_id: string;
  status: ResponseStatus;
  status_details?: { reason: string; error?: { code: string; message: string } };
  output_text: string;
  reasoning_text: string;
  usage: { input_tokens: number | null; output_tokens: number | null };
  metrics: ResponseMetrics;
  audio?: { duration_ms: number; played_ms: number; heard_text: string };
}

export type ConversationItem =
  | { id: string; type: "message"; role: "user" | "assistant" | "system"; content: TextPart[] }
  | { id: string; type: "message"; role: "user"; content: { type: "input_audio"; transcript: string }[] };

export type KnownServerEvent =
  | (Envelope<"session.created"> & { session: Session })
  | (Envelope<"session.updated"> & { session: Session })
  | (Envelope<"session.resumed"> & { session: Session; replayed_after: number })
  | (Envelope<"conversation.item.created"> & { item: ConversationItem })
  | (Envelope<"response.created"> & { response: { id: string; status: "in_progress"; item_id: string; model: string } })
  | (Envelope<"response.reasoning.delta"> & { response_id: string; item_id: string; delta: string })
  | (Envelope<"response.text.delta"> & { response_id: string; item_id: string; delta: string })
  | (Envelope<"response.audio_transcript.delta"> & { response_id: string; item_id: string; delta: string; offset_ms: number })
  | (Envelope<"response.audio.delta"> & { response_id: string; item_id: string; seq_no: number; offset_ms: number; audio: Uint8Array })
  | (Envelope<"response.done"> & { response: ResponseDone & { citations?: DocumentSource[] } })
  | (Envelope<"response.documents.sources"> & { response_id: string; item_id: string; sources: DocumentSource[] })
  | (Envelope<"conversation.item.truncated"> & { item_id: string; audio_end_ms: number; transcript: string })
  | (Envelope<"input_audio_buffer.speech_started"> & { item_id: string; audio_start_ms: number })
  | (Envelope<"input_audio_buffer.speech_stopped"> & { item_id: string; audio_end_ms: number })
  | (Envelope<"input_audio_buffer.committed"> & { item_id: string })
  | Envelope<"input_audio_buffer.cleared">
  | (Envelope<"conversation.item.input_audio_transcription.partial"> & { item_id: string; stable: string; unstable: string })
  | (Envelope<"conversation.item.input_audio_transcription.segment"> & { item_id: string; text: string; audio_start_ms: number; audio_end_ms: number })
  | (Envelope<"conversation.item.input_audio_transcription.completed"> & { item_id: string; transcript: string; audio_duration_ms: number; language: string | null })
  | (Envelope<"error"> & { error: ErrorBody; response_id?: string })
  | (Envelope<"ping"> & { ts: number })
  | (Envelope<"pong"> & { ts: number; reply_to?: string });

/** A document passage given to the model as source `n` (cited as [n] in the answer). */
export interface DocumentSource {
  n: number;
  label: string;
  document_id: string | null;
  document_name: string;
  ordinal: number;
  page: number | null;
  section: string | null;
  text: string;
  score: number | null;
}

/** A server event type this client does not know yet (the server may add types within v1). */
export type UnknownServerEvent = Envelope<string> & { [field: string]: unknown };
export type ServerEvent = KnownServerEvent;

export type ServerEventMap = { [E in KnownServerEvent as E["type"]]: E };

/** Events about the connection itself (not from the server). */
export interface LifecycleEventMap {
  /** a session is open: the first (`reconnected` false), a resumed one (`resumed` true), or a new one after a reconnect */
  open: { session: Session; reconnected: boolean; resumed: boolean };
  /** the link closed; `willResume`: it was lost and the next connection asks for the same session */
  close: { code: number; reason: string; willReconnect: boolean; willResume: boolean; byClient: boolean };
  /** the next connection attempt, in `delayMs`; `resume`: it asks for the same session */
  reconnecting: { attempt: number; delayMs: number; resume: boolean };
  /** the same session is back (after `session.resumed`): the events missed meanwhile were delivered, once each, before it */
  resumed: { session: Session; replayedAfter: number; replayed: number };
  /** a reconnect gave a NEW session: the server's history of the old one is gone for this client (see SessionLostReason) */
  session_lost: { reason: SessionLostReason; previousSessionId: string | null; session: Session };
  state: { state: ClientState };
  seq_gap: { expected: number; got: number };
  decode_error: { error: DecodeError };
}

export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/**
 * Why a reconnect gave a new session: "resume_failed" the server refused the resume (unknown or
 * expired session, e.g. after a server restart); "expired" the resume grace ran out before a
 * connection got through; "not_resumable" the link ended in a way that ends the session (e.g. 1011,
 * 1013), or resume is off (the `resume` option, or the server's resume_grace_ms is null).
 */
export type SessionLostReason = "resume_failed" | "expired" | "not_resumable";

// ---- the client ----------------------------------------------------------------------------------

export interface ReconnectOptions {
  /** first delay (500 ms) */
  initialDelayMs?: number;
  /** cap (15 s) */
  maxDelayMs?: number;
  /** growth per attempt (2) */
  factor?: number;
  /** +/- this fraction of random spread (0.25) */
  jitter?: number;
  /** give up after this many failed attempts in a row (Infinity) */
  maxAttempts?: number;
}

export interface RealtimeClientOptions {
  /** ws:// or wss:// URL of the server's /ws */
  url: string;
  /** a JWT, or a function giving one (called on every (re)connect and resume attempt) */
  token?: string | (() => string | Promise<string>);
  /** instead of a token: a function giving a fresh ticket (`POST /api/auth/ticket`; single-use, so
   *  it is called for every connection, resume attempts included); sent as ?ticket= */
  ticket?: () => string | Promise<string>;
  /** "query" (default: ?access_token=, works everywhere), "cookie" (browsers: sets an access_token
   *  cookie for the websocket path; Node: a Cookie header), "header" (Node `ws` only:
   *  Authorization: Bearer) */
  tokenTransport?: "query" | "cookie" | "header";
  /** "msgpack" (default) or "json" */
  encoding?: Encoding;
  /** a WebSocket constructor; default globalThis.WebSocket (Node 20: pass the `ws` package's) */
  WebSocket?: unknown;
  /** extra options for the WebSocket constructor's third argument (`ws` only) */
  webSocketOptions?: Record<string, unknown>;
  /** settings sent with session.update after every (re)connect */
  session?: SessionSettings;
  /** false: never reconnect (and so never resume) */
  reconnect?: ReconnectOptions | false;
  /** resume the session after a lost link (1005/1006/4000), within its resume_grace_ms (default true);
   *  false: every reconnect starts a new session */
  resume?: boolean;
  /** how long to wait for session.created (or, on a resume, for session.resumed) (10 s) */
  connectTimeoutMs?: number;
  /** own ping period; default the session's ping_interval_ms, else 10 s */
  pingIntervalMs?: number;
  /** silence before the link counts as dead; default the session's ping_timeout_ms, else 30 s */
  pingTimeoutMs?: number;
  /** appendAudio drops frames while more than this waits in the socket (4 MiB); it also drops them
   *  (never queues them) while not connected */
  maxBufferedBytes?: number;
  /** unread events an iterator holds before it fails (10 000) */
  maxQueuedEvents?: number;
}

export interface ResponseResult {
  responseId: string;
  itemId: string;
  text: string;
  reasoning: string;
  status: ResponseStatus;
  done: ResponseDone;
  /** the response's audio (PCM16 LE at the output rate), empty for text-only sessions */
  audio: Uint8Array;
  events: ServerEvent[];
}

export declare class RealtimeClient implements AsyncIterable<ServerEvent> {
  constructor(options: RealtimeClientOptions);
  readonly url: string;
  readonly encoding: Encoding;
  tokenTransport: "query" | "cookie" | "header";
  state: ClientState;
  /** the last session object (session.created / session.updated) */
  session: Session | null;
  sessionId: string | null;
  /** the newest seq seen of the current session (a resume asks for what came after it) */
  lastSeq: number;
  /** the current session's resume_secret (null: the server offers no resume) */
  resumeSecret: string | null;
  /** the current session's resume_grace_ms (null: resume off) */
  resumeGraceMs: number | null;
  /** resume after a lost link (the `resume` option) */
  resumeEnabled: boolean;
  /** server events dropped because their seq had been seen already */
  duplicatesDropped: number;
  /** appendAudio() frames (and their bytes) dropped: not connected, or over maxBufferedBytes */
  droppedAudioFrames: number;
  droppedAudioBytes: number;
  /** round trip of the client's last own ping, ms */
  rttMs: number | null;
  serverPings: number;
  /** settings re-applied after a reconnect */
  settings: SessionSettings;
  readonly bufferedAmount: number;

  connect(): Promise<Session>;
  close(code?: number, reason?: string): Promise<void>;

  on<K extends keyof ServerEventMap>(type: K, listener: (event: ServerEventMap[K]) => void): () => void;
  on<K extends keyof LifecycleEventMap>(type: K, listener: (event: LifecycleEventMap[K]) => void): () => void;
  on(type: "*", listener: (event: ServerEvent | UnknownServerEvent) => void): () => void;
  on(type: string, listener: (event: UnknownServerEvent) => void): () => void;
  off(type: string, listener: (event: any) => void): void;
  waitFor<K extends keyof ServerEventMap>(
    type: K,
    options?: { predicate?: (event: ServerEventMap[K]) => boolean; timeoutMs?: number; signal?: AbortSignal },
  ): Promise<ServerEventMap[K]>;
  waitFor(type: string, options?: { predicate?: (event: any) => boolean; timeoutMs?: number; signal?: AbortSignal }): Promise<any>;
  events(options?: { types?: readonly string[] }): AsyncIterableIterator<ServerEvent>;
  [Symbol.asyncIterator](): AsyncIterableIterator<ServerEvent>;

  send(event: ClientEvent | Record<string, unknown>): boolean;
  updateSession(settings: SessionSettings): Promise<Session>;
  createItem(role: "user" | "assistant" | "system", content: string | readonly ContentInput[]): Promise<ConversationItem>;
  createResponse(overrides?: ResponseSettings): string | null;
  sendText(text: string | readonly ContentInput[], overrides?: ResponseSettings): boolean;
  ask(text: string | readonly ContentInput[], overrides?: ResponseSettings): Promise<ResponseResult>;
  cancelResponse(responseId?: string): boolean;
  appendAudio(pcm16: Uint8Array | Int16Array | ArrayBuffer): boolean;
  commitAudio(): boolean;
  clearAudio(): boolean;
  truncate(itemId: string, audioEndMs: number): boolean;
  ping(): Promise<number>;
}

export declare class RealtimeError extends Error {
  constructor(error: ErrorBody);
  code: string;
  param?: string;
  eventId?: string;
  eventType?: string;
}

export declare class ConnectionError extends Error {
  constructor(message: string, details?: { code?: number; reason?: string; httpStatus?: number; fatal?: boolean });
  code?: number;
  reason?: string;
  /** the HTTP status of a refused handshake (Node only: browsers do not expose it) */
  httpStatus?: number;
  /** retrying cannot help */
  fatal: boolean;
}

// ---- codec ---------------------------------------------------------------------------------------

export declare class DecodeError extends Error {}
export declare function encodeEvent(event: Record<string, unknown>, encoding: Encoding): Uint8Array | string;
export declare function decodeEvent(data: ArrayBuffer | ArrayBufferView | string, encoding: Encoding): Record<string, any> & { type: string };
export declare function encodeBase64(bytes: Uint8Array): string;
export declare function decodeBase64(text: string): Uint8Array;

// ---- audio ---------------------------------------------------------------------------------------

export declare class Resampler {
  constructor(inRate: number, outRate: number, options?: { zeroCrossings?: number; phases?: number; rolloff?: number; beta?: number });
  readonly inRate: number;
  readonly outRate: number;
  readonly passthrough: boolean;
  readonly halfWidth: number;
  readonly delay: number;
  process(input: Float32Array): Float32Array;
  flush(): Float32Array;
  reset(): void;
}
export declare function floatToPcm16(samples: Float32Array, out?: Int16Array): Int16Array;
export declare function pcm16ToFloat(pcm: Int16Array | Uint8Array): Float32Array;

export interface PlaybackNotice {
  type: "started" | "finished" | "underrun";
  itemId: string;
  playedMs: number;
}

export declare class PlaybackQueue {
  constructor(options: { outRate: number; startMs?: number; maxBufferMs?: number });
  readonly outRate: number;
  overflowDrops: number;
  state: "idle" | "buffering" | "playing";
  currentItemId: string | null;
  underruns: number;
  totalPlayedFrames: number;
  readonly bufferedMs: number;
  readonly totalPlayedMs: number;
  playedMs(itemId: string | null): number;
  push(itemId: string, pcm16: Int16Array | Uint8Array, rate: number): boolean;
  end(itemId: string): void;
  flush(itemId?: string | null): { itemId: string | null; playedMs: number };
  render(out: Float32Array): void;
  takeNotices(): PlaybackNotice[];
}

export interface PlayerPosition {
  itemId: string | null;
  playedMs: number;
  bufferedMs: number;
  totalPlayedMs: number;
  underruns: number;
  state: "idle" | "buffering" | "playing";
}

export declare class AudioPlayer {
  static create(
    context: BaseAudioContext,
    options?: { startMs?: number; reportMs?: number; workletUrl?: string | URL; destination?: AudioNode },
  ): Promise<AudioPlayer>;
  readonly context: BaseAudioContext;
  readonly node: AudioWorkletNode;
  /** the worklet's last report (about every 50 ms while playing) */
  position: PlayerPosition;
  readonly playing: boolean;
  readonly totalPlayedMs: number;
  readonly outputLatencyMs: number;
  on(type: "position", listener: (position: PlayerPosition) => void): () => void;
  on(type: "started" | "finished" | "underrun", listener: (notice: PlaybackNotice) => void): () => void;
  on(type: "flushed", listener: (event: { itemId: string | null; playedMs: number }) => void): () => void;
  on(type: "interrupted", listener: (event: { itemId: string; playedMs: number; heardMs: number }) => void): () => void;
  push(itemId: string, pcm16: Uint8Array | Int16Array | ArrayBuffer, rate: number): boolean;
  end(itemId: string): void;
  flush(itemId?: string): Promise<{ itemId: string | null; playedMs: number }>;
  interrupt(client: RealtimeClient | null, itemId?: string | null): Promise<{ itemId: string; playedMs: number; heardMs: number } | null>;
  attach(client: RealtimeClient, options?: { truncate?: boolean; flushOnSpeechStarted?: boolean; defaultRate?: number }): () => void;
  close(): void;
}

export type MicrophoneErrorReason = "denied" | "not_found" | "busy" | "insecure_context" | "unsupported" | "failed";

export declare class MicrophoneError extends Error {
  constructor(reason: MicrophoneErrorReason, message: string, options?: { cause?: unknown });
  reason: MicrophoneErrorReason;
}
export declare function microphoneError(error: unknown): MicrophoneError;

export declare class MicCapture {
  static start(options: {
    context: AudioContext;
    /** the session's input rate (24000) */
    sampleRate?: number;
    /** frame length (20 ms) */
    frameMs?: number;
    echoCancellation?: boolean;
    noiseSuppression?: boolean;
    autoGainControl?: boolean;
    deviceId?: string;
    onFrame: (pcm16: Int16Array, level: number) => void;
    workletUrl?: string | URL;
  }): Promise<MicCapture>;
  readonly stream: MediaStream;
  readonly sampleRate: number;
  level: number;
  frames: number;
  readonly trackSettings: MediaTrackSettings;
  stop(): void;
}
