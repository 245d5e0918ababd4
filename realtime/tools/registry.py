"""The tools the model may call, as Ollama `tools` schemas, and the ToolBox that runs one call.

Native tool calling: the schemas go in /api/chat's `tools`; calls come back in `message.tool_calls`
and results go back as `{"role": "tool", "tool_name", "content"}` messages. Models without native tool
calls (the upstream answers 400 "does not support tools", as the embedded SmolLM2 does) get the same
tools described in a system prompt instead (FALLBACK_PROMPT, docs/protocol.md "Tools"): the model
replies with one JSON object `{"tool": name, "arguments": {...}}` to call a tool, or plain text to
answer; results come back as user messages starting "Tool result".
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.config import Settings
from realtime.tools.sandbox import (
    BubblewrapSandbox,
    DockerSandbox,
    OutputSink,
    Sandbox,
    SandboxLimits,
    SandboxUnavailable,
)
from realtime.tools.workspace import ToolError, Workspace, Workspaces

MAX_RESULT_CHARS = 4000  # of a tool's result given back to the model
MAX_ARGUMENT_CHARS = 256 << 10
KEPT_OUTPUTS = 8  # command outputs read_output can page through

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "list_files",
            "description": "List the files and directories in the user's workspace (or a directory in it).",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Directory relative to the workspace."}},
                "required": [],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a text file from the workspace.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "File path relative to the workspace."}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "write_file",
            "description": "Create or overwrite a text file in the workspace (parent directories are created).",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "File path relative to the workspace."},
                    "content": {"type": "string", "description": "The whole content of the file."},
                },
                "required": ["path", "content"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "delete_file",
            "description": "Delete a file or a directory (with its contents) from the workspace.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Path relative to the workspace."}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_command",
            "description": (
                "Run a shell command in the workspace, in a sandbox without network (python3 and the usual "
                "Unix tools are there). Returns its output and exit code."
            ),
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string", "description": "The shell command, e.g. python3 x.py"}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_output",
            "description": "Read more of an earlier command's output (run_command results show only its start).",
            "parameters": {
                "type": "object",
                "properties": {
                    "call_id": {"type": "string", "description": "The call id run_command's result named."},
                    "offset": {"type": "integer", "description": "Character offset to read from."},
                },
                "required": ["call_id"],
            },
        },
    },
]
TOOL_NAMES = frozenset(s["function"]["name"] for s in TOOL_SCHEMAS)


def fallback_prompt() -> str:
    """Tools described for a model without native tool calls."""
    lines = [
        "You can use tools on the user's files and run commands. To use a tool, reply with only one JSON "
        'object on one line and nothing else: {"tool": "<name>", "arguments": {...}}. You then get the '
        'result in a message starting "Tool result". When you have what you need, answer in plain text.',
        "Tools:",
    ]
    for schema in TOOL_SCHEMAS:
        fn = schema["function"]
        params = ", ".join(fn["parameters"]["properties"])
        lines.append(f"- {fn['name']}({params}): {fn['description']}")
    return "\n".join(lines)


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_fallback_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """The tool call a fallback-mode reply holds: `{"tool": ..., "arguments": {...}}`, maybe in a ``` fence."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        return None
    try:
        obj = json.loads(match.group(0))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("tool") or obj.get("name")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str) or name not in TOOL_NAMES or not isinstance(arguments, dict):
        return None
    return name, arguments


def may_be_fallback_call(text: str) -> bool:
    """Whether a reply that starts like this may still turn out to be a tool call (so it is held back)."""
    head = text.lstrip()
    return head == "" or head.startswith(("{", "`"))


@dataclass(slots=True)
class ToolOutcome:
    content: str  # what the model reads
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)  # for the client and the stored turn


def _arg(arguments: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    value = arguments.get(name, default)
    if not isinstance(value, str):
        raise ToolError(f"The argument '{name}' must be a string.")
    return value


class ToolBox:
    """One user's tools: their workspace, and the sandbox commands run in (None: no commands)."""

    def __init__(self, workspace: Workspace, sandbox: Sandbox | None, *, uid: int | None = None) -> None:
        self.workspace = workspace
        self.sandbox = sandbox
        self.uid = uid
        self._outputs: OrderedDict[str, str] = OrderedDict()

    def schemas(self) -> list[dict[str, Any]]:
        if self.sandbox is None:
            return [s for s in TOOL_SCHEMAS if s["function"]["name"] not in ("run_command", "read_output")]
        return TOOL_SCHEMAS

    async def call(
        self, call_id: str, name: str, arguments: Mapping[str, Any], on_output: OutputSink | None = None
    ) -> ToolOutcome:
        """Run one call; a refused or failed call is an outcome the model reads, never an exception."""
        try:
            if len(json.dumps(arguments)) > MAX_ARGUMENT_CHARS:
                raise ToolError("The arguments are too large.")
            return await self._call(call_id, name, arguments, on_output)
        except (ToolError, SandboxUnavailable) as exc:
            return ToolOutcome(f"Error: {exc.message}", ok=False, details={"error": exc.message})
        except OSError as exc:
            return ToolOutcome(f"Error: {exc.strerror or 'failed'}", ok=False, details={"error": exc.strerror})

    async def _call(
        self, call_id: str, name: str, arguments: Mapping[str, Any], on_output: OutputSink | None
    ) -> ToolOutcome:
        ws = self.workspace
        if name == "list_files":
            entries = await asyncio.to_thread(ws.list, _arg(arguments, "path", default="."))
            listing = [{"name": e.name, "type": e.kind, "size": e.size} for e in entries]
            text = "\n".join(f"{e.name}{'/' if e.kind == 'dir' else ''} ({e.size} bytes)" for e in entries)
            return ToolOutcome(text or "(empty)", ok=True, details={"entries": listing})
        if name == "read_file":
            path = _arg(arguments, "path")
            text, truncated = await asyncio.to_thread(ws.read, path)
            shown = text[:MAX_RESULT_CHARS]
            more = len(text) > len(shown) or truncated
            note = f"\n[file truncated: first {len(shown)} characters shown]" if more else ""
            return ToolOutcome(shown + note, ok=True, details={"path": path, "truncated": more})
        if name == "write_file":
            path = _arg(arguments, "path")
            size = await asyncio.to_thread(ws.write, path, _arg(arguments, "content"))
            return ToolOutcome(f"Wrote {size} bytes to {path}.", ok=True, details={"path": path, "size": size})
        if name == "delete_file":
            path = _arg(arguments, "path")
            kind = await asyncio.to_thread(ws.delete, path)
            return ToolOutcome(f"Deleted the {kind} {path}.", ok=True, details={"path": path})
        if name == "run_command":
            if self.sandbox is None:
                raise ToolError("Commands are disabled on this server.")
            command = _arg(arguments, "command")
            if not command.strip():
                raise ToolError("The command is empty.")
            result = await self.sandbox.run(ws.root, command, uid=self.uid, on_output=on_output)
            summary = result.summary()
            self._keep(call_id, summary)
            text = summary
            if len(summary) > MAX_RESULT_CHARS:
                head = summary[: MAX_RESULT_CHARS // 2]
                tail = summary[-MAX_RESULT_CHARS // 2 :]
                cut = len(summary) - len(head) - len(tail)
                text = f"{head}\n[... {cut} characters cut: read_output with call_id {call_id} shows them ...]\n{tail}"
            details = {
                "exit_code": result.exit_code,
                "signal": result.signal,
                "timed_out": result.timed_out,
                "truncated": result.truncated,
                "output_size": result.output_size,
            }
            return ToolOutcome(text, ok=result.exit_code == 0, details=details)
        if name == "read_output":
            kept = self._outputs.get(_arg(arguments, "call_id"))
            if kept is None:
                raise ToolError("No kept output has that call id.")
            offset = arguments.get("offset", 0)
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ToolError("The offset must be a non-negative integer.")
            piece = kept[offset : offset + MAX_RESULT_CHARS]
            rest = len(kept) - offset - len(piece)
            note = f"\n[{rest} more characters]" if rest > 0 else ""
            return ToolOutcome(piece + note, ok=True, details={"offset": offset})
        raise ToolError(f"There is no tool named '{name}'.")

    def _keep(self, call_id: str, output: str) -> None:
        self._outputs[call_id] = output
        while len(self._outputs) > KEPT_OUTPUTS:
            self._outputs.popitem(last=False)


def toolbox_for(settings: Settings, user: str) -> ToolBox:
    """The user's ToolBox under the server's settings (their workspace is created on first use)."""
    limits = SandboxLimits(
        cpu_time=settings.sandbox_cpu_time,
        max_memory_size=settings.sandbox_max_memory_size,
        max_processes=settings.sandbox_max_processes,
        max_file_size=settings.sandbox_max_file_size,
        max_output_size=settings.sandbox_max_output_size,
        wall_timeout=settings.sandbox_wall_timeout,
    )
    sandbox: Sandbox | None = None
    if settings.sandbox == "bubblewrap":
        sandbox = BubblewrapSandbox(limits)
    elif settings.sandbox == "docker":
        sandbox = DockerSandbox(limits, image=settings.sandbox_image)
    workspaces = Workspaces(settings.tools_dir or settings.state_dir / "workspaces")
    return ToolBox(workspaces.for_user(user), sandbox, uid=Workspaces.sandbox_uid(user))
