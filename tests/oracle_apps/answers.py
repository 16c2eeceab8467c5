"""What LitServe answers for good and bad requests: a raw Response with a media type,
HTTP errors and crashes in user code, LitServe's own example API, no OpenAPI page, and
the OpenAI specs' validation and failures."""

import sys

import litserve as ls
from fastapi import HTTPException


class PictureAPI(ls.LitAPI):
    def decode_request(self, request):
        return request["kind"]

    def predict(self, kind):
        if kind == "teapot":
            raise HTTPException(status_code=418, detail="short and stout")
        if kind == "crash":
            raise RuntimeError("the model fell over")
        return kind

    def encode_response(self, kind):
        if kind == "text":
            return ls.Response(content="plain words", media_type="text/plain")
        return ls.Response(
            content=b"\x89PNG\r\n\x1a\n-not-really",
            headers={"X-Picture": "1"},
            media_type="image/png",
        )


class WordStream(ls.LitAPI):
    def decode_request(self, request):
        return request["prompt"]

    def predict(self, prompt):
        if prompt == "crash":
            yield "half"
            raise RuntimeError("the model fell over")
        yield from prompt.split()

    def encode_response(self, words):
        for word in words:
            yield {"word": word}


class FailingChat(ls.LitAPI):
    def predict(self, request):
        yield "a"
        raise RuntimeError("the model fell over")


class FailingEmbed(ls.LitAPI):
    def predict(self, inputs):
        raise RuntimeError("the model fell over")


if __name__ == "__main__":
    apis = [
        PictureAPI(api_path="/picture"),
        ls.test_examples.SimpleLitAPI(api_path="/square"),
        WordStream(api_path="/stream", stream=True),
        FailingChat(spec=ls.OpenAISpec()),
        FailingEmbed(spec=ls.OpenAIEmbeddingSpec()),
    ]
    server = ls.LitServer(apis, accelerator="cpu", disable_openapi_url=True)
    server.run(port=int(sys.argv[1]), generate_client_file=False)
