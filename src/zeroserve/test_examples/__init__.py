"""``litserve.test_examples`` under zeroserve's name: the small APIs LitServe's docs and
tests start from."""

from zeroserve.test_examples.openai_spec_example import (
    OpenAIBatchContext,
    OpenAIBatchingWithUsage,
    OpenAIWithUsage,
    OpenAIWithUsageEncodeResponse,
    TestAPI,
    TestAPIWithCustomEncode,
    TestAPIWithStructuredOutput,
    TestAPIWithToolCalls,
)
from zeroserve.test_examples.simple_example import (
    SimpleBatchedAPI,
    SimpleLitAPI,
    SimpleStreamAPI,
    SimpleTorchAPI,
)

__all__ = [
    "OpenAIBatchContext",
    "OpenAIBatchingWithUsage",
    "OpenAIWithUsage",
    "OpenAIWithUsageEncodeResponse",
    "SimpleBatchedAPI",
    "SimpleLitAPI",
    "SimpleStreamAPI",
    "SimpleTorchAPI",
    "TestAPI",
    "TestAPIWithCustomEncode",
    "TestAPIWithStructuredOutput",
    "TestAPIWithToolCalls",
]
