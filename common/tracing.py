"""OpenTelemetry tracing across the cluster's processes, when the environment asks for it.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or an
OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
and ``OTEL_SDK_DISABLED`` is not true. Off, ``setup`` returns None and OpenTelemetry is never
imported; each process then tests one attribute per request. On, it needs the ``tracing``
extra; the endpoint, headers, sampler, batching and propagators are the SDK's own reading of
the standard ``OTEL_*`` variables.

The trace context travels in a request's metadata (``trace``, what the propagators inject:
W3C ``traceparent`` and ``tracestate``), so the broker's and worker's spans sit under the
frontend's, which continues the client's ``traceparent``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from zeroserve.common.errors import ConfigError
from zeroserve.common.version import version as zeroserve_version

log = logging.getLogger(__name__)

#: What a stage is wrapped in when its request is not traced.
NO_SPAN: AbstractContextManager[Any] = nullcontext()
#: The exporter ``otlp`` means, by OTLP protocol.
OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
INSTALL = "pip install 'zeroserve[tracing]'"


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    given = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if given:
        names = [name.strip().lower() for name in given.split(",") if name.strip()]
    elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        names = ["otlp"]
    else:
        names = []
    return [name for name in names if name != "none"]


def _entry_point_of(name: str, environ: Mapping[str, str]) -> Any:
    if name == "otlp":
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol not in OTLP_EXPORTERS:
            raise ConfigError(
                f"OTLP protocol {protocol!r} is not supported for traces; "
                f"use one of {', '.join(OTLP_EXPORTERS)}"
            )
        if protocol == "grpc":
            extra = "pip install opentelemetry-exporter-otlp-proto-grpc"
        else:
            extra = INSTALL
        name = OTLP_EXPORTERS[protocol]
    else:
        extra = f"install the package that provides the {name!r} trace exporter"
    from importlib.metadata import entry_points  # only when traces are asked for

    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        raise ConfigError(f"traces are asked for with {name!r}, which is not installed: {extra}")
    return found[0]


def check(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse, in one line, an environment that asks for traces this installation cannot send
    (before any process is started, so that it is not a restart loop)."""
    names = _exporter_names(environ)
    if not names:
        return
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"the environment asks for traces (OTEL_*), but OpenTelemetry is not installed: "
            f"{INSTALL}"
        ) from None
    for name in names:
        _entry_point_of(name, environ)


def setup(role: str, environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """This process's tracing (its ``service.name`` is ``zeroserve-<role>`` unless
    ``OTEL_SERVICE_NAME`` says otherwise), or None when the environment does not ask for it."""
    names = _exporter_names(environ)
    if not names:
        return None
    check(environ)
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "zeroserve.role": role,
        "service.version": zeroserve_version(),
    }
    named = "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not environ.get("OTEL_SERVICE_NAME") and not named:
        attributes["service.name"] = f"zeroserve-{role}"
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        exporter = _entry_point_of(name, environ).load()()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    # Global, so that spans user code opens inside predict join the request's trace.
    trace.set_tracer_provider(provider)
    log.info("tracing on: %s exporter(s) %s", role, ", ".join(names))
    return Tracing(provider)


class Tracing:
    """The spans zeroserve opens, over one process's tracer provider."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import propagate, trace

        self.provider = provider
        self._trace = trace
        self._propagate = propagate
        self.tracer = provider.get_tracer("zeroserve", zeroserve_version())

    def server_span(
        self, name: str, headers: Mapping[str, str], start_ns: int, attributes: dict[str, Any]
    ) -> Any:
        """The frontend's span of an HTTP request, continuing the client's trace if it sent one;
        None when the sampler leaves the request out (the frontend decides for every process:
        a request that carries no context gets no span elsewhere)."""
        return self._recording(
            name,
            self._propagate.extract(headers),
            self._trace.SpanKind.SERVER,
            start_ns,
            attributes,
        )

    def _recording(
        self, name: str, context: Any, kind: Any, start_ns: int | None, attributes: Any
    ) -> Any:
        """A span under `context`, or None when the sampler leaves it out."""
        span = self.tracer.start_span(
            name, context=context, kind=kind, start_time=start_ns, attributes=attributes
        )
        return span if span.is_recording() else None

    def carrier(self, span: Any) -> dict[str, str]:
        """The context a request's metadata carries to the other processes."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier

    def remote_span(
        self,
        carrier: Any,
        name: str,
        *,
        start_ns: int | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> Any:
        """A span under the one a request's metadata names; None when it names none."""
        if not isinstance(carrier, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in carrier.items()
        ):
            return None
        context = self._propagate.extract(carrier)
        if not self._trace.get_current_span(context).get_span_context().is_valid:
            return None
        return self._recording(name, context, self._trace.SpanKind.CONSUMER, start_ns, attributes)

    def record(
        self,
        parent: Any,
        name: str,
        start_ns: int,
    ) -> None:
        """A span from `start_ns` to now (a wait, say), under `parent`."""
        span = self.tracer.start_span(
            name, context=self._trace.set_span_in_context(parent), start_time=start_ns
        )
        span.end()

    @contextmanager
    def stage(
        self,
        parent: Any,
        name: str,
        *,
        links: list[Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        """A span around a stage of user code, current while it runs (so that the user's own
        spans nest in it); an exception that passes through is recorded on it."""
        trace = self._trace
        span_links = [trace.Link(other.get_span_context()) for other in links or ()]
        with self.tracer.start_as_current_span(
            name,
            context=trace.set_span_in_context(parent),
            links=span_links,
            attributes=attributes,
        ) as span:
            yield span

    def end(self, span: Any, status: int | None = None) -> None:
        """End a request's span with its HTTP status; a 5xx marks it failed."""
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        """Send what is buffered (a process's last act)."""
        try:
            self.provider.shutdown()
        except Exception:
            log.exception("tracing: shutting down the exporter failed")
