import zeroserve as ls
from zeroserve import OpenAISpec
from zeroserve.test_examples.openai_spec_example import TestAPIWithStructuredOutput

if __name__ == "__main__":
    api = TestAPIWithStructuredOutput(spec=OpenAISpec())
    server = ls.LitServer(api, fast_queue=True)
    server.run()
