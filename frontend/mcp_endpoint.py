"""``/mcp/``: the MCP server LitServe mounts for APIs built with ``mcp=MCP(...)``.

LitServe runs the ``mcp`` package's stateless streamable-HTTP server with JSON
answers; the frontend runs no user code, so it answers the small JSON-RPC
subset that transport needs itself (initialize, ping, tools/list, tools/call,
notifications) from the tools workers announced in READY, refusing what the
``mcp`` server refuses with its answers. A ``tools/call`` is forwarded to the
tool's route as an ordinary request, and its answer is turned into MCP content
the way LitServe's ``_convert_to_content`` does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.version import version as zeroserve_version
from zeroserve.frontend.admin import GuardedHandler

log = logging.getLogger(__name__)

#: The paths LitServe serves MCP at (its mount answers both).
MCP_PATHS = frozenset({"/mcp", "/mcp/"})
#: Protocol versions answered as asked; any other gets the newest.
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
#: LitServe's server name (``mcp.server.lowlevel.Server``'s first argument).
SERVER_NAME = "mcp-streamable-http-stateless"


@functools.cache
def server_version() -> str:
    """LitServe's server reports the ``mcp`` package's version; ours when it is absent. Read
    when first asked: importlib.metadata costs the frontend's start tens of milliseconds."""
    from importlib import metadata

    try:
        return metadata.version("mcp")
    except metadata.PackageNotFoundError:
        return zeroserve_version()


NOT_JSON = "Not Acceptable: Client must accept application/json"
NOT_SSE = "Not Acceptable: Client must accept text/event-stream"
NO_DELETE = "Method Not Allowed: Session termination not supported"
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602


def tools_of(services: dict[str, p.ServiceRoutes]) -> dict[str, dict[str, Any]]:
    """Every announced tool by name, from the brokers' merged route table."""
    tools: dict[str, dict[str, Any]] = {}
    for service in services.values():
        tool = service.mcp_tool
        if tool is not None and isinstance(tool.get("name"), str):
            tools[tool["name"]] = tool
    return tools


def as_content(status: int, content_type: str, body: bytes) -> tuple[list[dict[str, Any]], bool]:
    """An answer as MCP text content, and whether it is an error (LitServe's conversion:
    a string as it is, a list item by item, anything else as indented JSON)."""
    text = body.decode("utf-8", "replace")
    value: Any = text
    if "json" in content_type or not content_type:
        try:
            value = json.loads(text)
        except ValueError:
            value = text
    if status >= 400:
        detail = value.get("detail", value) if isinstance(value, dict) else value
        return [{"type": "text", "text": f"{status}: {detail}"}], True
    items = value if isinstance(value, list) else [value]
    content = [
        {
            "type": "text",
            "text": item if isinstance(item, str) else json.dumps(item, indent=2, default=str),
        }
        for item in items
    ]
    return content, False


class MCPHandler(GuardedHandler):
    """One JSON-RPC message per POST, answered as JSON; GET opens an idle event stream and
    DELETE is refused, as the ``mcp`` package's stateless server does."""

    def check_xsrf_cookie(self) -> None:
        """A JSON-RPC endpoint, not a form."""

    def prepare(self) -> None:
        if self.request.path == "/mcp":  # Starlette's mount redirects to the slash
            self.redirect("/mcp/", status=307)
        elif not tools_of(self.link.services):
            self.write_json_error(404, "Not Found")
        else:
            self.check_api_key()

    async def post(self) -> None:
        if "application/json" not in self.request.headers.get("Accept", ""):
            self._refuse(406, INVALID_REQUEST, NOT_JSON)
            return
        if not self.request.headers.get("Content-Type", "").startswith("application/json"):
            self.set_status(400)
            self.finish("Invalid Content-Type header")
            return
        try:
            message = json.loads(self.request.body)
        except ValueError as exc:
            self._refuse(400, PARSE_ERROR, f"Parse error: {exc}")
            return
        if not _is_message(message):
            self._refuse(400, INVALID_PARAMS, "Validation error: not one JSON-RPC 2.0 message")
            return
        if "id" not in message or "method" not in message:
            self.set_status(202)  # a notification or a response: accepted, nothing to say
            self.finish()
            return
        self._reply(200, await self._answer(message, tools_of(self.link.services)))

    async def get(self) -> None:
        if "text/event-stream" not in self.request.headers.get("Accept", ""):
            self._refuse(406, INVALID_REQUEST, NOT_SSE)
            return
        # A stateless server never sends on it; it stays open until the client goes.
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache, no-transform")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = asyncio.get_running_loop().create_future()
        self.flush()
        await self._gone

    def on_connection_close(self) -> None:
        closed = getattr(self, "_gone", None)
        if closed is not None and not closed.done():
            closed.set_result(None)

    def delete(self) -> None:
        self._refuse(405, INVALID_REQUEST, NO_DELETE)

    def _refuse(self, status: int, code: int, message: str) -> None:
        self._reply(status, _error("server-error", code, message))

    def _reply(self, status: int, answer: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer, separators=(",", ":")))

    async def _answer(self, message: dict[str, Any], tools: dict[str, dict[str, Any]]) -> Any:
        """The answer to one JSON-RPC request."""
        rid, method = message["id"], message["method"]
        params = message.get("params") or {}
        if not isinstance(params, dict):
            return _error(rid, INVALID_PARAMS, "Invalid request parameters", "")
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
            result: dict[str, Any] = {
                "protocolVersion": version,
                "capabilities": {"experimental": {}, "tools": {"listChanged": False}},
                "serverInfo": {"name": SERVER_NAME, "version": server_version()},
            }
        elif method == "ping":
            result = {}
        elif method == "tools/list":
            result = {
                "tools": [
                    {k: t[k] for k in ("name", "description", "inputSchema")}
                    for t in tools.values()
                ]
            }
        elif method == "tools/call":
            result = await self._call(tools.get(str(params.get("name"))), params)
        else:
            # The mcp package knows no such request type, so its parameters are "invalid".
            return _error(rid, INVALID_PARAMS, "Invalid request parameters", "")
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    async def _call(self, tool: dict[str, Any] | None, params: dict[str, Any]) -> dict[str, Any]:
        """Forward a tool call to its route; LitServe's handler takes its ``request`` argument
        as the body."""
        if tool is None:  # LitServe's lookup is a dict's: its KeyError says the name
            return _tool_error(repr(params.get("name")))
        route = self.link.route(tool["endpoint"])
        if route is None:
            return _tool_error(f"Endpoint {tool['endpoint']} not found")
        arguments = params.get("arguments") or {}
        if (invalid := schema_error(arguments, tool["inputSchema"])) is not None:
            return _tool_error(f"Input validation error: {invalid}")
        body = arguments.get("request", arguments) if isinstance(arguments, dict) else arguments
        waiter = self.link.submit(
            route, tool["endpoint"], "POST", "application/json", json.dumps(body).encode()
        )
        command, meta, payload = await waiter.next()
        if command == p.ERROR:
            return _tool_error(f"{meta.get('status', 500)}: {meta.get('error', '')}")
        parts = [payload]
        while command == p.CHUNK:
            command, _, payload = await waiter.next()
            parts.append(payload)
        status = int(meta.get("status", 200))
        content, failed = as_content(status, str(meta.get("ct", "")), b"".join(parts))
        return {"content": content, "isError": failed}


def _tool_error(text: str) -> dict[str, Any]:
    log.warning("MCP tool call failed: %s", text)
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _error(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


def _is_message(message: Any) -> bool:
    return isinstance(message, dict) and message.get("jsonrpc") == "2.0"


def schema_error(arguments: Any, schema: dict[str, Any]) -> str | None:
    """Why `arguments` do not fit the tool's input schema, as the ``mcp`` server checks
    them before a call (with ``jsonschema``, when it is installed), or None."""
    try:
        import jsonschema
    except ImportError:
        return None
    try:
        jsonschema.validate(instance=arguments, schema=schema)
    except jsonschema.ValidationError as exc:
        return exc.message
    except jsonschema.SchemaError:
        return None
    return None
