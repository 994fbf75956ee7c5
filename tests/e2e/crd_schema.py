"""Validation of Istio objects against Istio's own CustomResourceDefinitions, as the Kubernetes
API server does it on ``kubectl apply`` (strict field validation, kubectl's default).

A CRD's ``openAPIV3Schema`` is a Kubernetes *structural* schema: JSON Schema keywords that the
maintained ``jsonschema`` library checks, plus Kubernetes extensions that this module adds to
it as keywords of an extended validator:

- ``x-kubernetes-validations``: CEL rules, evaluated with ``cel-python`` (``celpy``). The
  Kubernetes CEL library functions Istio's rules use (``isURL``, ``url``, ``getScheme``) are
  provided on ``rfc3986``: Go's ``url.ParseRequestURI`` accepts an absolute URI or an absolute
  path, with valid characters in every component.
- ``x-kubernetes-list-type: map`` / ``set``: items must be unique by their keys / values.
- ``nullable: true``: ``null`` is accepted.
- unknown fields are refused (``additionalProperties: false`` wherever the schema lists
  properties and does not say ``x-kubernetes-preserve-unknown-fields``).

Every problem is rendered in the API server's words (``spec.url in body should be at least 1
chars long``, ``spec.sha256 in body should match ...``, ``...: Required value``, ``...: Invalid
value: "object": <rule message>``), so a test can compare with Istio's expected messages.
Formats (``int32``, ``date-time``) are annotations here, as ``jsonschema`` treats them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import celpy
import celpy.celtypes as celtypes
import jsonschema
import rfc3986
import rfc3986.exceptions
import rfc3986.validators
import yaml
from jsonschema import ValidationError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "istio"
CRD_FILE = FIXTURES / "crd-all.gen.yaml"
TESTDATA = FIXTURES / "testdata"


# --------------------------------------------------------------------------------------------
# Kubernetes CEL library functions used by Istio's rules
# --------------------------------------------------------------------------------------------

_URI_COMPONENTS = ("scheme", "userinfo", "host", "port", "path", "query", "fragment")


def _request_uri(text: str) -> rfc3986.URIReference | None:
    """Go's ``url.ParseRequestURI``: an absolute URI, or an absolute path; None if neither."""
    ref = rfc3986.uri_reference(text)
    try:
        rfc3986.validators.Validator().check_validity_of(*_URI_COMPONENTS).validate(ref)
    except rfc3986.exceptions.ValidationError:
        return None
    if ref.scheme is None and not (ref.authority is None and (ref.path or "").startswith("/")):
        return None
    return ref


def _cel_is_url(value: celtypes.StringType) -> celtypes.BoolType:
    return celtypes.BoolType(_request_uri(str(value)) is not None)


def _cel_url(value: celtypes.StringType) -> celtypes.StringType:
    # CEL has no URL type in celpy: the checked string stands for it; getScheme re-parses.
    if _request_uri(str(value)) is None:
        raise ValueError(f"URL parse error during conversion from string: {value}")
    return value


def _cel_get_scheme(value: celtypes.StringType) -> celtypes.StringType:
    ref = _request_uri(str(value))
    if ref is None:
        raise ValueError(f"not a URL: {value}")
    return celtypes.StringType(ref.scheme or "")


_CEL_FUNCTIONS = {"isURL": _cel_is_url, "url": _cel_url, "getScheme": _cel_get_scheme}
_CEL = celpy.Environment()


@lru_cache(maxsize=None)
def _cel_program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule), functions=_CEL_FUNCTIONS)


def _cel_holds(rule: str, instance: Any) -> bool:
    """The rule's verdict; a rule that fails to evaluate (e.g. ``url()`` of a non-URL) fails,
    as the API server reports it as an error too."""
    try:
        result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(instance)})
    except Exception:  # celpy raises its own and the functions' errors alike
        return False
    return isinstance(result, celtypes.BoolType) and bool(result)


# --------------------------------------------------------------------------------------------
# The extended validator
# --------------------------------------------------------------------------------------------

_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
              float: "number", type(None): "null"}


def _x_kubernetes_validations(validator, rules, instance, schema) -> Iterator[ValidationError]:
    for rule in rules:
        if not _cel_holds(rule["rule"], instance):
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            yield ValidationError(message, validator="x-kubernetes-validations",
                                  validator_value=rule, instance=instance, schema=schema)


def _x_kubernetes_list_type(validator, list_type, instance, schema) -> Iterator[ValidationError]:
    if not isinstance(instance, list) or list_type not in ("map", "set"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: set[str] = set()
    for index, item in enumerate(instance):
        identity = {k: item.get(k) for k in keys} if list_type == "map" and isinstance(item, dict) else item
        text = json.dumps(identity, sort_keys=True)
        if text in seen:
            err = ValidationError(f"Duplicate value: {text}", validator="x-kubernetes-list-type",
                                  validator_value=list_type, instance=item, schema=schema)
            err.path.appendleft(index)
            yield err
        seen.add(text)


def _nullable_type(validator, types, instance, schema) -> Iterator[ValidationError]:
    if instance is None and schema.get("nullable"):
        return
    yield from jsonschema.Draft7Validator.VALIDATORS["type"](validator, types, instance, schema)


KubernetesValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    validators={
        "type": _nullable_type,
        "x-kubernetes-validations": _x_kubernetes_validations,
        "x-kubernetes-list-type": _x_kubernetes_list_type,
    },
)


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the schema lists the known ones."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k in ("enum", "required", "x-kubernetes-validations") else _strict(v))
           for k, v in schema.items()}
    if "properties" in schema:
        # A property *named* properties is a schema too; only the keyword's value is a map.
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if ("additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
    return out


# --------------------------------------------------------------------------------------------
# Problems in the API server's words
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return self.message


def _field_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(error: ValidationError) -> Iterator[Problem]:
    path = _field_path(error.absolute_path)
    kw, value, inst = error.validator, error.validator_value, error.instance
    if kw == "required":
        for name in value:
            if isinstance(inst, dict) and name not in inst:
                field = f"{path}.{name}" if path else name
                yield Problem(field, f"{field}: Required value")
        return
    if kw == "additionalProperties":
        known = error.schema.get("properties", {})
        for name in inst:
            if name not in known:
                field = f"{path}.{name}" if path else name
                yield Problem(field, f'unknown field "{field}"')
        return
    messages = {
        "minLength": lambda: f"{path} in body should be at least {value} chars long",
        "maxLength": lambda: f"{path} in body may not be longer than {value}",
        "pattern": lambda: f"{path} in body should match '{value}'",
        "type": lambda: f'{path} in body must be of type {value}: "{_JSON_TYPE.get(type(inst), "unknown")}"',
        "enum": lambda: f'{path}: Unsupported value: {json.dumps(inst)}: supported values: '
                        + ", ".join(json.dumps(v) for v in value),
        # The API server reports a bound as an invalid value, naming the value.
        "minimum": lambda: (f"{path}: Invalid value: {json.dumps(inst)}: "
                            f"{path} in body should be greater than or equal to {value}"),
        "maximum": lambda: (f"{path}: Invalid value: {json.dumps(inst)}: "
                            f"{path} in body should be less than or equal to {value}"),
        "maxItems": lambda: f"{path}: Too many: {len(inst)}: must have at most {value} items",
        "maxProperties": lambda: f"{path}: Too many: {len(inst)}: must have at most {value} items",
        "x-kubernetes-validations": lambda: (
            f'{path}: Invalid value: "{_JSON_TYPE.get(type(inst), "unknown")}": {error.message}'),
        "x-kubernetes-list-type": lambda: f"{path}: {error.message}",
    }
    render = messages.get(kw)
    yield Problem(path, render() if render else f"{path}: {error.message}")


# --------------------------------------------------------------------------------------------
# The CRDs
# --------------------------------------------------------------------------------------------


class IstioCrds:
    """Istio's CRDs, selected by apiVersion and kind as the API server selects them."""

    def __init__(self, crd_file: Path = CRD_FILE):
        self._schemas: dict[tuple[str, str], dict] = {}
        for crd in yaml.safe_load_all(crd_file.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    api_version = f"{group}/{version['name']}"
                    self._schemas[(api_version, kind)] = version["schema"]["openAPIV3Schema"]
        self._validators: dict[tuple[str, str], Any] = {}

    def kinds(self) -> set[tuple[str, str]]:
        return set(self._schemas)

    def validator(self, api_version: str, kind: str):
        key = (api_version, kind)
        if key not in self._validators:
            if key not in self._schemas:
                raise KeyError(f"no served CRD for apiVersion {api_version!r} kind {kind!r}")
            schema = copy.deepcopy(self._schemas[key])
            # The API server itself checks the type meta and object meta of every object.
            schema["properties"] = {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                             "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}},
                **schema["properties"],
            }
            self._validators[key] = KubernetesValidator(_strict(schema))
        return self._validators[key]

    def problems(self, obj: dict) -> list[Problem]:
        """Every problem the API server would report for ``obj``; empty when it is accepted."""
        validator = self.validator(obj.get("apiVersion", ""), obj.get("kind", ""))
        out: list[Problem] = []
        for error in validator.iter_errors(obj):
            out.extend(_problems(error))
        return out


def load_documents(path: Path) -> list[dict]:
    """The non-empty documents of a multi-document YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
