"""The OpenAI Realtime API (GA) dialect: a second websocket route onto the same sessions (docs/openai-compat.md).

translator.py, inbound.py and schema.py are sans-I/O (maps in, maps out); transport.py moves frames
through them for a session; route.py is the websocket endpoint.
"""

from realtime.openai_compat.route import PATH, openai_realtime_endpoint

__all__ = ["PATH", "openai_realtime_endpoint"]
