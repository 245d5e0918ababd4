"""An Ollama-API-compatible HTTP server on llama-cpp-python, for machines without a real Ollama.

The voice server starts it as a child process (`python -m realtime.local_ollama`) and talks to it
exactly as to Ollama: /api/chat, /api/generate, /api/tags, /api/ps, /api/show, /api/version, and
Ollama's OpenAI-compatible /v1/chat/completions and /v1/models. It is a separate service: nothing here
imports the rest of `realtime`.
"""
