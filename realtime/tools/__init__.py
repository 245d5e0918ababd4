"""Tools the model may call: a per-user workspace, a command sandbox, and the registry of tool schemas.

workspace.py  the user's directory; every path is walked one component at a time with O_NOFOLLOW
sandbox.py    runs a command under bubblewrap (default) or Docker, with limits, streaming its output
registry.py   the tool schemas sent to Ollama (`tools`), parsing tool calls, running one call

docs/security.md describes the threat model.
"""
