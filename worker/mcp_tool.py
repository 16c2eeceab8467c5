"""The MCP tool an API announces: ``LitAPI(mcp=MCP(...))`` turned into plain JSON at start.

The frontend runs no user code, so the worker derives the tool's name,
description and input schema (from ``decode_request``'s type hints, as LitServe
does) and sends them in READY; the frontend then answers MCP clients alone.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zeroserve.common.errors import ConfigError

log = logging.getLogger(__name__)

#: The largest tool description a worker announces (READY's metadata is at most 64 KiB).
MAX_TOOL_BYTES = 16 * 1024


def mcp_tool(api: Any, route: str) -> dict[str, Any] | None:
    """The tool `api` is, served at `route`, or None when it was built without ``mcp=``."""
    mcp = getattr(api, "mcp", None)
    if mcp is None:
        return None
    name = type(api).__name__
    if not callable(getattr(mcp, "as_tool", None)):
        raise ConfigError(f"{name}.mcp must be an MCP(...) object, not {type(mcp).__name__}")
    if not getattr(mcp, "_connected", False):
        # Pickled to this process without its API (see MCP.__getstate__): connect it again.
        mcp._connect(api)
    try:
        tool = mcp.as_tool()
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name}.mcp: {exc}") from exc
    described = {
        "name": str(tool.name),
        "description": str(tool.description),
        "inputSchema": dict(tool.inputSchema),
        "endpoint": route,
    }
    if len(json.dumps(described, default=str)) > MAX_TOOL_BYTES:
        raise ConfigError(f"{name}.mcp: the tool's description is larger than 16 KiB")
    return described
