"""``LitAPI(mcp=MCP(...))`` through real processes: the worker announces the tool, the
frontend answers MCP's streamable HTTP at /mcp/, checked with the ``mcp`` package's client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests

from cluster import Cluster

pytest.importorskip("mcp")

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


async def _session(url: str, calls: list[tuple[str, dict[str, Any]]]) -> tuple[Any, list[Any]]:
    async with (
        streamablehttp_client(url) as (read_stream, write_stream, _),
        ClientSession(read_stream, write_stream) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        results = [await session.call_tool(name, args) for name, args in calls]
        return tools, results


def test_an_api_with_mcp_is_a_tool_at_mcp(cluster: Cluster) -> None:
    cluster.up("tests/apis_mcp.py:PowerAPI")
    tools, (ok, refused, invalid, unknown) = asyncio.run(
        _session(
            cluster.url("/mcp/"),
            [
                ("predict", {"request": {"input": 3}}),
                ("predict", {"request": {"input": -1}}),
                ("predict", {"request": {"input": "x"}}),
                ("nothing", {}),
            ],
        )
    )
    (tool,) = tools.tools
    assert tool.name == "predict"
    assert tool.description == "Returns the power of a number."
    # LitServe's schema: decode_request's argument, its pydantic model under $defs.
    assert tool.inputSchema["properties"] == {"request": {"$ref": "#/$defs/PowerRequest"}}
    assert tool.inputSchema["required"] == ["request"]
    assert tool.inputSchema["title"] == "decode_requestArguments"
    assert tool.inputSchema["$defs"]["PowerRequest"]["properties"]["input"]["type"] == "number"
    assert not ok.isError
    assert ok.content[0].text == '{\n  "output": 9.0\n}'
    # LitServe's texts: the HTTPException, the schema check before the call, the KeyError.
    assert refused.isError and refused.content[0].text == "400: only numbers >= 0"
    assert invalid.isError
    assert invalid.content[0].text == "Input validation error: 'x' is not of type 'number'"
    assert unknown.isError and unknown.content[0].text == "'nothing'"
    # The route itself is unchanged, and what a stateless
    # server refuses is refused.
    assert cluster.post({"input": 2}).json() == {"output": 4.0}
    assert requests.get(cluster.url("/mcp/"), timeout=5).status_code == 406
    assert requests.delete(cluster.url("/mcp/"), timeout=5).status_code == 405


def test_without_mcp_there_is_no_mcp_endpoint(cluster: Cluster) -> None:
    cluster.up()
    answer = requests.post(cluster.url("/mcp/"), json={"jsonrpc": "2.0", "id": 1}, timeout=5)
    assert answer.status_code == 404
