"""Open Inference Protocol v2 tensor descriptions of a task's input and output fields, read from
their pydantic schemas: strings and images are ``BYTES``, numbers ``FP32``, integers ``INT64``,
booleans ``BOOL``; nested objects (entities, answers) are ``BYTES`` holding JSON, one per item."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["describe_fields", "field_tensor"]

_DATATYPES = {"string": "BYTES", "number": "FP32", "integer": "INT64", "boolean": "BOOL"}


def _variants(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a schema node (``anyOf``/``oneOf`` flattened, ``$ref`` resolved,
    ``null`` dropped)."""
    if "$ref" in node:
        return _variants(defs.get(node["$ref"].rsplit("/", 1)[-1], {}), defs)
    for key in ("anyOf", "oneOf"):
        if key in node:
            return [v for alt in node[key] for v in _variants(alt, defs)]
    return [] if node.get("type") == "null" else [node]


def _leaves(node: dict[str, Any], defs: dict[str, Any], depth: int) -> list[tuple[str, int]]:
    """(leaf type, array depth) of every alternative; ``"object"`` for objects and untyped."""
    out = []
    for v in _variants(node, defs):
        kind = v.get("type")
        if kind == "array":
            out += _leaves(v.get("items", {}), defs, depth + 1)
        elif kind in _DATATYPES:
            out.append((kind, depth))
        else:
            out.append(("object", depth))
    return out


def field_tensor(
    name: str, node: dict[str, Any], defs: dict[str, Any], *, general: bool
) -> dict[str, Any]:
    """``{"name", "datatype", "shape"}`` of one schema field (``-1``: any size). A field with
    forms of several ranks gets the most general one (``general``, for outputs) or the simplest
    batch form (inputs: a list of texts rather than a list of text pairs)."""
    leaves = _leaves(node, defs, 0) or [("object", 0)]
    kinds = {k for k, _ in leaves}
    depths = [d for _, d in leaves]
    depth = max(depths) if general else min([d for d in depths if d > 0] or [1])
    if kinds <= {"number", "integer"} and "number" in kinds:
        datatype = "FP32"
    elif len(kinds) == 1 and "object" not in kinds:
        datatype = _DATATYPES[kinds.pop()]
    else:
        datatype, depth = "BYTES", min(depth, 1)  # JSON of each item
    return {"name": name, "datatype": datatype, "shape": [-1] * max(depth, 1)}


def describe_fields(schema: type[BaseModel], *, outputs: bool) -> list[dict[str, Any]]:
    """One tensor description per field of ``schema`` (a task's input or, with ``outputs``,
    output schema), in field order."""
    js = schema.model_json_schema()
    defs = js.get("$defs", {})
    props = js.get("properties", {})
    return [field_tensor(name, node, defs, general=outputs) for name, node in props.items()]
