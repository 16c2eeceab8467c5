import zeroserve as ls
from zeroserve import OpenAISpec
from zeroserve.test_examples.openai_spec_example import TestAPI

if __name__ == "__main__":
    api = TestAPI(spec=OpenAISpec())
    server = ls.LitServer(api)
    server.run()
