"""Open Inference Protocol v2 tensor descriptions of a task's input and output fields, read from
their pydantic schemas: strings and images are ``BYTES``, numbers ``FP32``, integers ``INT64``,
booleans ``BOOL``; nested objects (entities, answers) are ``BYTES`` holding JSON, one per item."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel

from ..errors import InputError

__all__ = [
    "HEADER_LENGTH",
    "NUMPY_TYPES",
    "TensorError",
    "TensorRequest",
    "describe_fields",
    "encode_response",
    "field_tensor",
    "is_tensor_request",
    "parse_request",
]

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


# ---- requests and responses -----------------------------------------------------------------

#: numpy types of the protocol's datatypes (BYTES: Python bytes/str objects)
NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
#: request parameters that steer the protocol itself, not the task
_RESERVED = ("binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
             "timeout")  # fmt: skip
HEADER_LENGTH = "inference-header-content-length"


class TensorError(InputError):
    """A tensor request that does not follow the protocol (answered with 400)."""


@dataclass
class TensorRequest:
    """A parsed tensor request: the task's input fields, its per-call options, and how to
    answer (which outputs, binary or JSON)."""

    id: Optional[str]
    fields: dict[str, Any]
    options: dict[str, Any]
    outputs: Optional[list[tuple[str, bool]]]
    binary_output: bool


def is_tensor_request(payload: Any) -> bool:
    """Whether a JSON body is the protocol's tensor form: ``inputs`` is a list of objects that
    carry ``name`` and ``datatype`` (a task's own ``inputs`` field holds texts)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        return False
    items = payload["inputs"]
    return bool(items) and all(
        isinstance(i, dict) and "name" in i and "datatype" in i for i in items
    )


def _shape(where: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise TensorError(f"{where}: shape must be a list of ints >= 0, got {value!r}")
    return value


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TensorError(f"{where} must be true or false, got {value!r}")
    return value


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _from_binary(where: str, datatype: str, raw: bytes, count: int) -> np.ndarray:
    if datatype != "BYTES":
        dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
        if len(raw) != count * dtype.itemsize:
            raise TensorError(
                f"{where}: {len(raw)} bytes of binary data do not hold {count} {datatype} values "
                f"({count * dtype.itemsize} bytes)"
            )
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorError(f"{where}: binary BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise TensorError(f"{where}: binary BYTES element {len(items)} is truncated")
        items.append(raw[offset : offset + n])
        offset += n
    if len(items) != count:
        raise TensorError(f"{where}: binary data holds {len(items)} elements, shape says {count}")
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def _from_json(where: str, datatype: str, data: Any, count: int) -> np.ndarray:
    flat = _flatten(data)
    if len(flat) != count:
        raise TensorError(
            f"{where}: data holds {len(flat)} values, its shape {count}; give one "
            "value per element of the shape"
        )
    if datatype == "BYTES":
        if not all(isinstance(x, str) for x in flat):
            raise TensorError(f"{where}: BYTES data must be strings in JSON")
        out = np.empty(count, dtype=object)
        out[:] = flat
        return out
    kind = np.dtype(NUMPY_TYPES[datatype]).kind
    ok = {
        "b": lambda x: isinstance(x, bool),
        "f": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    }.get(kind, lambda x: isinstance(x, int) and not isinstance(x, bool))
    if not all(ok(x) for x in flat):
        raise TensorError(f"{where}: data holds values that are not {datatype}")
    try:
        return np.asarray(flat, dtype=NUMPY_TYPES[datatype])
    except (OverflowError, ValueError) as e:
        raise TensorError(f"{where}: data does not fit {datatype}: {e}") from None


def parse_request(
    payload: Any, binary: bytes, fields: list[str], image_field: Optional[str]
) -> TensorRequest:
    """The `TensorRequest` of a tensor body (``binary``: what follows the JSON header); each
    input tensor fills the task input field of its name. TensorError names what is wrong."""
    if not is_tensor_request(payload):
        raise TensorError("the request's inputs must be a list of tensors with name and datatype")
    values: dict[str, Any] = {}
    offset = 0
    for i, tensor in enumerate(payload["inputs"]):
        name = tensor["name"]
        where = f"input {name!r}" if isinstance(name, str) else f"input {i}"
        if name not in fields:
            raise TensorError(f"{where}: no such input; the inputs are {', '.join(fields)}")
        if name in values:
            raise TensorError(f"{where} is given twice")
        datatype = tensor["datatype"]
        if not isinstance(datatype, str) or datatype not in NUMPY_TYPES:
            raise TensorError(
                f"{where}: unknown datatype {datatype!r}; use one of {', '.join(NUMPY_TYPES)}"
            )
        if name == image_field and datatype != "BYTES":
            raise TensorError(
                f"{where}: images are BYTES tensors (encoded image files, or "
                f"data:image/...;base64, URLs in JSON), got {datatype}"
            )
        shape = _shape(where, tensor.get("shape"))
        count = math.prod(shape)  # Python ints: no overflow
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise TensorError(
                    f"{where}: binary_data_size must be an integer >= 0, got {size!r}"
                )
            if offset + size > len(binary):
                raise TensorError(
                    f"{where}: binary_data_size {size!r} runs past the {len(binary)} bytes of "
                    "binary data after the JSON header"
                )
            array = _from_binary(where, datatype, binary[offset : offset + size], count)
            offset += size
        elif "data" in tensor:
            array = _from_json(where, datatype, tensor["data"], count)
        else:
            raise TensorError(f"{where}: no data (neither data nor binary_data_size)")
        array = array.reshape(shape)
        if datatype == "BYTES" and name != image_field:
            try:
                array = np.vectorize(
                    lambda b: b.decode("utf-8") if isinstance(b, bytes) else b, otypes=[object]
                )(array)
            except UnicodeDecodeError as e:
                raise TensorError(f"{where}: BYTES elements must be UTF-8 text: {e}") from None
        values[name] = array.tolist()
    if offset != len(binary):
        raise TensorError(
            f"{len(binary) - offset} bytes of binary data follow the JSON header that no input "
            "claims (binary_data_size)"
        )
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise TensorError(f"parameters must be an object, got {type(params).__name__}")
    options = {k: v for k, v in params.items() if k not in _RESERVED}
    binary_output = _flag("parameters.binary_data_output", params.get("binary_data_output", False))
    outputs = payload.get("outputs")
    wanted: Optional[list[tuple[str, bool]]] = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise TensorError("outputs must be a list of objects with a name")
        wanted = []
        for o in outputs:
            p = o.get("parameters") or {}
            if not isinstance(p, dict):
                raise TensorError(
                    f"output {o['name']!r}: parameters must be an object, got {type(p).__name__}"
                )
            where = f"output {o['name']!r}: binary_data"
            wanted.append((o["name"], _flag(where, p.get("binary_data", binary_output))))
    request_id = payload.get("id")
    return TensorRequest(
        None if request_id is None else str(request_id), values, options, wanted, binary_output
    )


def _tensor(name: str, value: Any) -> tuple[dict[str, Any], np.ndarray]:
    """An output field as (header without data, array): numbers FP32/INT64/BOOL, strings BYTES,
    anything ragged or nested BYTES of each item's JSON."""
    try:
        array = np.asarray(value)
    except ValueError:
        array = np.asarray(None, dtype=object)
    kind = array.dtype.kind
    if kind in "biuf" and array.dtype != object:
        datatype = {"b": "BOOL", "f": "FP32"}.get(kind, "INT64")
        array = array.astype(NUMPY_TYPES[datatype])
    elif kind == "U":
        datatype = "BYTES"
        array = array.astype(object)
    else:
        items = value if isinstance(value, list) else [value]
        datatype = "BYTES"
        array = np.empty(len(items), dtype=object)
        array[:] = [json.dumps(item) for item in items]
    if array.ndim == 0:
        array = array.reshape(1)
    return {"name": name, "datatype": datatype, "shape": list(array.shape)}, array


def _binary(datatype: str, array: np.ndarray) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    parts = []
    for item in array.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def encode_response(
    model_name: str, request: TensorRequest, output: BaseModel
) -> tuple[bytes, Optional[int]]:
    """The response body of ``output`` and, when it carries binary data, the length of its JSON
    header (the ``Inference-Header-Content-Length``)."""
    values = output.model_dump(mode="json")
    wanted = request.outputs
    if wanted is None:
        wanted = [(name, request.binary_output) for name in values]
    unknown = [name for name, _ in wanted if name not in values]
    if unknown:
        raise TensorError(f"no output named {unknown[0]!r}; the outputs are {', '.join(values)}")
    tensors = []
    blobs = []
    for name, binary in wanted:
        header, array = _tensor(name, values[name])
        if binary:
            blob = _binary(header["datatype"], array)
            header["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            header["data"] = array.ravel().tolist()
        tensors.append(header)
    body: dict[str, Any] = {"model_name": model_name, "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    text = json.dumps(body).encode("utf-8")
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)
