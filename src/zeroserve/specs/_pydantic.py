"""pydantic, which the spec models need: the ``pydantic`` extra."""

try:
    import pydantic
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "zeroserve's OpenAI request and response models need pydantic: "
        "pip install 'zeroserve[pydantic]'"
    ) from exc

__all__ = ["pydantic"]
