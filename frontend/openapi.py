"""``GET /openapi.json``: every service's routes, with the request schema its API announced."""

from __future__ import annotations

from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.version import version as zeroserve_version
from zeroserve.frontend.admin import GuardedHandler


class OpenAPIHandler(GuardedHandler):
    """``GET /openapi.json``: every service's routes, with the request schema its API's
    ``decode_request`` annotation gives."""

    def get(self) -> None:
        if not self.check_api_key():
            return
        self.finish(openapi_document(self.link.services, zeroserve_version()))


def openapi_document(services: dict[str, p.ServiceRoutes], version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for name, service in sorted(services.items()):
        body_schema: dict[str, Any] = {}
        if service.request_schema is not None:
            schema = dict(service.request_schema)
            components.update(schema.pop("$defs", None) or {})
            title = str(schema.get("title") or name)
            components[title] = schema
            body_schema = {"$ref": f"#/components/schemas/{title}"}
        for route in service.routes:
            operation = {
                "summary": name,
                "requestBody": {"content": {"application/json": {"schema": body_schema}}},
                "responses": {
                    "200": {"description": "the model's answer"},
                    "422": {"description": "the body does not fit the request schema"},
                },
            }
            paths[route.path] = {method.lower(): operation for method in route.methods or ("POST",)}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "zeroserve", "version": version},
        "paths": paths,
    }
    if components:
        document["components"] = {"schemas": components}
    return document
