"""How every HTTP endpoint is served: `Route`, the one request handler behind every API route.

FastAPI documents each route from its endpoint's signature (OpenAPI, `/docs`) as usual. Its
per-request dependency solver, though, cost more CPU than a whole send (docs/performance.md),
so `Route` serves the endpoint itself: at start-up it binds each parameter of the endpoint to
one of five sources, the same for every route — the caller (`Depends(authenticate)`, where
`authenticate` is the one `auth.Authenticator`), the JSON body (a pydantic model), a path
parameter, a query parameter, and the `Peer` (`Depends(auth.peer)`: the client's address and
user agent, for sessions and the audit log) — validated by pydantic with the constraints FastAPI documents,
with FastAPI's error locations. A parameter of any other kind (a new dependency, a header)
makes start-up fail with a clear message, so nothing declared on a route is ever skipped:
support it here, once, for every route. Failures are raised to the app's exception handlers
(`errors.py`), so every route answers errors alike.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sitecomms.server.api.auth import Authenticator, peer
from sitecomms.server.services.sessions import Peer

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
    if route.dependencies:
        raise TypeError(f"{route.path}: Route serves no route or router dependencies; name the caller instead")
    hints = typing.get_type_hints(endpoint, include_extras=True)
    caller: Caller | None = None
    sources: list[tuple[str, Source]] = []
    has_body = False
    for name, parameter in inspect.signature(endpoint).parameters.items():
        annotation = hints.get(name, Any)
        default = parameter.default
        _refuse_unserved(route, name, annotation, default)
        if isinstance(default, params.Depends) and default.dependency is peer:
            sources.append((name, _peer))
        elif isinstance(default, params.Depends):
            if not isinstance(default.dependency, Authenticator):
                raise TypeError(f"{route.path}: {name}: Route serves no dependency but the Authenticator")
            caller = (name, default.dependency)
        elif name in route.param_convertors:
            sources.append((name, _path(name, annotation, default)))
        elif isinstance(default, params.Query):
            sources.append((name, _query(name, annotation, default)))
        elif _body_model(annotation) is not None:
            if has_body:
                raise TypeError(f"{route.path}: {name}: Route serves one body model per route")
            has_body = True
            sources.append((name, _body(name, annotation, default)))
        else:
            raise TypeError(f"{route.path}: {name}: Route serves path, query, body, peer and caller parameters only")
    return caller, sources


def _refuse_unserved(route: APIRoute, name: str, annotation: Any, spec: Any) -> None:
    """What FastAPI would do with this parameter and `Route` does not: refused, never ignored."""
    where = f"{route.path}: {name}"
    if isinstance(spec, FieldInfo):
        if spec.alias not in (None, name) or spec.validation_alias not in (None, name) or spec.default_factory:
            raise TypeError(f"{where}: Route serves no aliases or default factories")
        if isinstance(spec, params.Body) and spec.embed:
            raise TypeError(f"{where}: Route serves no embedded bodies")
        if isinstance(spec.default, list | dict | set):
            raise TypeError(f"{where}: a mutable default would be shared between requests")
    if isinstance(spec, params.Query) and typing.get_origin(annotation) in (list, tuple, set, frozenset):
        raise TypeError(f"{where}: Route serves single-valued query parameters only")
    optional_model = typing.get_origin(annotation) in (typing.Union, types.UnionType) and (
        set(typing.get_args(annotation)) - {type(None)} == {_body_model(annotation)}
    )
    if _body_model(annotation) is not None and not (_is_model(annotation) or optional_model):
        raise TypeError(f"{where}: a body is one model, or that model or None")


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def _located(errors: ErrorList, exc: ValidationError, *where: str | int) -> None:
    for error in exc.errors(include_url=False):
        errors.append({**error, "loc": (*where, *error["loc"])})


def _constrained(annotation: Any, spec: Any) -> TypeAdapter[Any]:
    metadata = getattr(spec, "metadata", None) or []
    return TypeAdapter(Annotated[annotation, *metadata] if metadata else annotation)


def _path(name: str, annotation: Any, spec: Any) -> Source:
    adapter = _constrained(annotation, spec)

    async def source(request: Request, errors: ErrorList) -> Any:
        try:
            return adapter.validate_python(request.path_params[name])
        except ValidationError as exc:
            _located(errors, exc, "path", name)
            return None

    return source


def _query(name: str, annotation: Any, spec: params.Query) -> Source:
    adapter = _constrained(annotation, spec)
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


async def _peer(request: Request, errors: ErrorList) -> Peer:
    return await peer(request)


def _body_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if _is_model(candidate):
            return typing.cast(type[BaseModel], candidate)
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
    optional = spec is None or (isinstance(spec, params.Body) and spec.default is None)

    async def source(request: Request, errors: ErrorList) -> Any:
        try:
            raw = await request.body()
        except ClientDisconnect:
            raise HTTPException(400, "the client went away before sending the whole body") from None
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
            if document is None:  # JSON `null`: no body
                if not optional:
                    errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
                return None
        try:
            return model.model_validate(document)
        except ValidationError as exc:
            _located(errors, exc, "body")
            for error in errors:  # FastAPI's words, not our class name
                if error["type"] == "model_type":
                    error["msg"] = "Input should be a valid dictionary or object to extract fields from"
            return None

    return source


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _decode(raw: bytes, errors: ErrorList) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        refused = exc
    if "surrogate" in str(refused):  # valid JSON, invalid text: the field rules say why (a 422, not a 400)
        try:  # refusing what orjson refuses too: NaN and Infinity are not JSON
            return json.loads(raw, parse_constant=_not_json)
        except (ValueError, RecursionError) as exc:
            refused = exc  # type: ignore[assignment]
    errors.append({"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {refused}", "input": {}})
    return None
