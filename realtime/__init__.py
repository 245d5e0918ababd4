"""Realtime voice server: websocket sessions running streamed STT -> LLM -> TTS on local models."""
