"""LitServe's own GZip (minimum_size=1000), and CORS allowing every origin and method."""

import sys

import litserve as ls
from starlette.middleware.cors import CORSMiddleware


class LargeAPI(ls.LitAPI):
    def decode_request(self, request):
        return int(request["size"])

    def predict(self, size):
        return "0" * size

    def encode_response(self, output):
        return {"result": output}


if __name__ == "__main__":
    server = ls.LitServer(
        LargeAPI(api_path="/large"),
        accelerator="cpu",
        middlewares=[(CORSMiddleware, {"allow_origins": ["*"], "allow_methods": ["*"]})],
    )
    server.run(port=int(sys.argv[1]), generate_client_file=False)
