"""LitServe's middlewares a user gives (CORS, a GZip of their own, a size limit) and the
GZip it adds itself, on a small and a large answer."""

import sys

import litserve as ls
from litserve.middlewares import MaxSizeMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware


class LargeAPI(ls.LitAPI):
    def decode_request(self, request):
        return int(request["size"])

    def predict(self, size):
        return "0" * size

    def encode_response(self, output):
        return {"result": output}


if __name__ == "__main__":
    apis = [LargeAPI(api_path="/large"), ls.test_examples.SimpleLitAPI(api_path="/square")]
    cors = {
        "allow_origins": ["https://a.example"],
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["X-Custom"],
        "allow_credentials": True,
        "expose_headers": ["X-Picture"],
        "max_age": 60,
    }
    middlewares = [
        (CORSMiddleware, cors),
        (GZipMiddleware, {"minimum_size": 100, "compresslevel": 5}),
        (MaxSizeMiddleware, {"max_size": 4096}),
    ]
    server = ls.LitServer(apis, accelerator="cpu", middlewares=middlewares)
    server.run(port=int(sys.argv[1]), generate_client_file=False)
