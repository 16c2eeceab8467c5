import zeroserve as ls
from zeroserve import OpenAIEmbeddingSpec
from zeroserve.test_examples.openai_embedding_spec_example import TestEmbedAPI

if __name__ == "__main__":
    api = TestEmbedAPI(spec=OpenAIEmbeddingSpec())
    server = ls.LitServer(api, fast_queue=True)
    server.run()
