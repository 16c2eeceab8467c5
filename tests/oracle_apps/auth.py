"""LitServe's authorization idioms, written for LitServe (``import litserve as ls``).

The oracle tests run this file as it is under LitServe and, with the import
renamed, under zeroserve, send both the same requests and compare the answers.
"""

import sys

import litserve as ls
from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer


class SquareAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}


class TokenAPI(SquareAPI):
    """LitServe's test_auth: a Bearer token checked by FastAPI's HTTPBearer."""

    def __init__(self, token, **kwargs):
        super().__init__(**kwargs)
        self._token = token

    def authorize(self, auth: HTTPAuthorizationCredentials = Depends(HTTPBearer())):
        if auth.scheme != "Bearer" or auth.credentials != self._token:
            raise HTTPException(status_code=401, detail="Bad token")


class HeaderAPI(SquareAPI):
    """A header read by FastAPI's Header(), required."""

    def authorize(self, x_team: str = Header()):
        if x_team != "blue":
            raise HTTPException(status_code=403, detail=f"team {x_team} may not")


class RequestAPI(SquareAPI):
    """The request object itself (``ls.Request``), read by an async authorize."""

    async def authorize(self, request: ls.Request):
        if request.headers.get("x-tenant") != "acme":
            raise HTTPException(status_code=401, detail="unknown tenant")


class CrashingAuthAPI(SquareAPI):
    def authorize(self, request: Request):
        raise RuntimeError("the auth service is down")


if __name__ == "__main__":
    apis = [
        SquareAPI(api_path="/open"),
        TokenAPI("alpha", api_path="/alpha"),
        TokenAPI("beta", api_path="/beta"),
        HeaderAPI(api_path="/header"),
        RequestAPI(api_path="/request"),
        CrashingAuthAPI(api_path="/crash"),
    ]
    server = ls.LitServer(apis, accelerator="cpu", workers_per_device=1)
    server.run(port=int(sys.argv[1]), generate_client_file=False)
