"""How every HTTP endpoint is served: `Route`, the one request handler behind every API route.

FastAPI documents each route from its endpoint's signature (OpenAPI, `/docs`) as usual. Its
per-request dependency solver, though, cost more CPU than a whole send (docs/performance.md),
so `Route` serves the endpoint itself: at start-up it binds each parameter of the endpoint to
one of four sources, the same for every route — the caller (`Depends(authenticate)`, where
`authenticate` is the one `auth.Authenticator`), the JSON body (a pydantic model), a path
parameter, a query parameter — validated by pydantic with the constraints FastAPI documents,
with FastAPI's error locations. A parameter of any other kind (a new dependency, a header)
makes start-up fail with a clear message, so nothing declared on a route is ever skipped:
support it here, once, for every route. Failures are raised to the app's exception handlers
(`errors.py`), so every route answers errors alike.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sitecomms.server.api.auth import Authenticator

ErrorList = list[dict[str, Any]]
Source = Callable[[Request, ErrorList], Awaitable[Any]]
Caller = tuple[str, Authenticator]


class Route(APIRoute):
    """An `APIRoute` that FastAPI documents and this module serves (see the module doc)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{path}: endpoints are async functions")
        self._call: Callable[..., Awaitable[Response]] = endpoint
        self._authenticate, self._sources = _bind(self, endpoint)
        self.app = self._serve  # Starlette's Route.handle calls self.app once the path and method matched

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        arguments: dict[str, Any] = {}
        if self._authenticate is not None:  # first: an unauthenticated caller learns nothing of the input rules
            name, authenticate = self._authenticate
            arguments[name] = await authenticate(request)
        errors: ErrorList = []
        for name, source in self._sources:
            arguments[name] = await source(request, errors)
        if errors:
            raise RequestValidationError(errors)
        response = await self._call(**arguments)
        await response(scope, receive, send)


def _bind(route: APIRoute, endpoint: Callable[..., Any]) -> tuple[Caller | None, list[tuple[str, Source]]]:
    hints = typing.get_type_hints(endpoint, include_extras=True)
    caller: Caller | None = None
    sources: list[tuple[str, Source]] = []
    for name, parameter in inspect.signature(endpoint).parameters.items():
        annotation = hints.get(name, Any)
        default = parameter.default
        if isinstance(default, params.Depends):
            if not isinstance(default.dependency, Authenticator):
                raise TypeError(f"{route.path}: {name}: Route serves no dependency but the Authenticator")
            caller = (name, default.dependency)
        elif name in route.param_convertors:
            sources.append((name, _path(name, annotation)))
        elif isinstance(default, params.Query):
            sources.append((name, _query(name, annotation, default)))
        elif _body_model(annotation) is not None:
            sources.append((name, _body(name, annotation, default)))
        else:
            raise TypeError(f"{route.path}: {name}: Route serves path, query, body and caller parameters only")
    return caller, sources


def _located(errors: ErrorList, exc: ValidationError, *where: str | int) -> None:
    for error in exc.errors(include_url=False):
        errors.append({**error, "loc": (*where, *error["loc"])})


def _path(name: str, annotation: Any) -> Source:
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    async def source(request: Request, errors: ErrorList) -> Any:
        try:
            return adapter.validate_python(request.path_params[name])
        except ValidationError as exc:
            _located(errors, exc, "path", name)
            return None

    return source


def _query(name: str, annotation: Any, spec: params.Query) -> Source:
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[annotation, *spec.metadata] if spec.metadata else annotation)
    default = spec.default

    async def source(request: Request, errors: ErrorList) -> Any:
        raw = request.query_params.get(name)
        if raw is None:
            if default is PydanticUndefined:
                errors.append({"type": "missing", "loc": ("query", name), "msg": "Field required", "input": None})
            return default
        try:
            return adapter.validate_python(raw)
        except ValidationError as exc:
            _located(errors, exc, "query", name)
            return None

    return source


def _body_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False  # FastAPI's strict content type: no header, no JSON
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _body(name: str, annotation: Any, spec: Any) -> Source:
    model = _body_model(annotation)
    assert model is not None
    optional = isinstance(spec, params.Body) and spec.default is None

    async def source(request: Request, errors: ErrorList) -> Any:
        raw = await request.body()
        if not raw:
            if not optional:
                errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
            return None
        document: Any = raw  # not JSON: validation says what was expected
        if _is_json(request.headers.get("content-type")):
            failed = len(errors)
            document = _decode(raw, errors)
            if len(errors) > failed:
                return None
            if document is None:  # JSON `null` is no body, as FastAPI reads it
                if not optional:
                    errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
                return None
        try:
            return model.model_validate(document)
        except ValidationError as exc:
            _located(errors, exc, "body")
            return None

    return source


def _decode(raw: bytes, errors: ErrorList) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:  # what orjson refuses but JSON allows (a lone surrogate escape) is left to the field rules
        return json.loads(raw)
    except ValueError as exc:
        errors.append({"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {exc}", "input": {}})
        return None
