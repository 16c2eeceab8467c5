"""APIs served as MCP tools (``mcp=MCP(...)``), for tests/test_mcp.py.

No ``from __future__ import annotations``: LitServe reads decode_request's hints as
objects, and a string hint gives a plain string schema, there as here.
"""

from pydantic import BaseModel, Field

from zeroserve import HTTPException, LitAPI
from zeroserve.mcp import MCP


class PowerRequest(BaseModel):
    input: float = Field(description="the number to square")


class PowerAPI(LitAPI):
    """Squares a number."""

    mcp = MCP(description="Returns the power of a number.")

    def decode_request(self, request: PowerRequest) -> float:
        if request.input < 0:
            raise HTTPException(400, "only numbers >= 0")
        return request.input

    def predict(self, x: float) -> float:
        return x**2

    def encode_response(self, output: float) -> dict[str, float]:
        return {"output": output}
