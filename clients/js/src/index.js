// The realtime voice client: protocol v1 over a websocket, in browsers and Node 20+. See README.md.

export { RealtimeClient, RealtimeError, ConnectionError, CLOSE_DEAD_LINK, LOST_LINK_CODES } from "./client.js";
export { encodeEvent, decodeEvent, DecodeError, SUBPROTOCOLS, BINARY_FIELDS, PROTOCOL_VERSION } from "./codec.js";
export { encodeBase64, decodeBase64 } from "./base64.js";
export * as events from "./events.js";
export { CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES, SAMPLE_RATES } from "./events.js";
export { Resampler, floatToPcm16, pcm16ToFloat } from "./audio/resampler.js";
export { PlaybackQueue } from "./audio/playback.js";
export { AudioPlayer } from "./audio/player.js";
export { MicCapture, MicrophoneError, microphoneError } from "./audio/mic.js";
