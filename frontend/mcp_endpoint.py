"""``/mcp/``: the MCP server LitServe mounts for APIs built with ``mcp=MCP(...)``.

LitServe runs the ``mcp`` package's stateless streamable-HTTP server with JSON
answers; the frontend runs no user code, so it answers the small JSON-RPC
subset that transport needs itself (initialize, ping, tools/list, tools/call,
notifications) from the tools workers announced in READY. A ``tools/call`` is
forwarded to the tool's route as an ordinary request, and its answer is turned
into MCP content the way LitServe's ``_convert_to_content`` does.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.version import __version__
from zeroserve.frontend.app import GuardedHandler

log = logging.getLogger(__name__)

#: The paths LitServe serves MCP at (its mount answers both).
MCP_PATHS = frozenset({"/mcp", "/mcp/"})
#: Protocol versions answered as asked; any other gets the newest.
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
#: LitServe's server name (``mcp.server.lowlevel.Server``'s first argument).
SERVER_NAME = "mcp-streamable-http-stateless"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


def tools_of(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every announced tool by name, from the brokers' merged route table."""
    tools: dict[str, dict[str, Any]] = {}
    for service in services.values():
        tool = service.get("mcp_tool") if isinstance(service, dict) else None
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
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
    """POST JSON-RPC messages; GET and DELETE are refused, as a stateless server does."""

    def check_xsrf_cookie(self) -> None:
        """A JSON-RPC endpoint, not a form."""

    async def post(self) -> None:
        if not self.check_api_key():
            return
        tools = tools_of(self.link.services)
        if not tools:
            self.write_json_error(404, "Not Found")
            return
        try:
            message = json.loads(self.request.body)
        except ValueError:
            self._reply(400, _error(None, PARSE_ERROR, "Parse error"))
            return
        batch = isinstance(message, list)
        answers = [a for m in (message if batch else [message]) if (a := await self._one(m, tools))]
        if not answers:
            self.set_status(202)  # notifications and responses only: accepted, no body
            self.finish()
            return
        self._reply(200, answers if batch else answers[0])

    def get(self) -> None:
        self._not_allowed()

    def delete(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        self.set_header("Allow", "POST")
        self._reply(405, _error("server-error", INVALID_REQUEST, "Method Not Allowed"))

    def _reply(self, status: int, answer: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer))

    async def _one(self, message: Any, tools: dict[str, dict[str, Any]]) -> Any:
        """The answer to one JSON-RPC message, or None for a notification or a response."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, "Invalid Request")
        if "id" not in message or "method" not in message:
            return None
        rid, method = message["id"], message["method"]
        params = message.get("params") or {}
        if not isinstance(params, dict):
            return _error(rid, INVALID_PARAMS, "params must be an object")
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
            result: dict[str, Any] = {
                "protocolVersion": version,
                "capabilities": {"experimental": {}, "tools": {"listChanged": False}},
                "serverInfo": {"name": SERVER_NAME, "version": __version__},
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
            return _error(rid, METHOD_NOT_FOUND, "Method not found")
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    async def _call(self, tool: dict[str, Any] | None, params: dict[str, Any]) -> dict[str, Any]:
        """Forward a tool call to its route; LitServe's handler takes its ``request`` argument
        as the body."""
        if tool is None:
            return _tool_error(f"Tool {params.get('name')} not found")
        route = self.link.route(tool["endpoint"])
        if route is None:
            return _tool_error(f"Endpoint {tool['endpoint']} not found")
        arguments = params.get("arguments") or {}
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


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
