"""The API the deployment files serve; replace it with your own (any MODULE:ATTR works)."""

from zeroserve import LitAPI


class ExampleAPI(LitAPI):
    """{"input": x} -> {"output": x * 2}, batched."""

    max_batch_size = 8
    batch_timeout = 0.005

    def decode_request(self, request):
        return request["input"]

    def predict(self, xs):
        return [x * 2 for x in xs]

    def encode_response(self, output):
        return {"output": output}
