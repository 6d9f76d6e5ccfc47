"""Model metadata describes each endpoint's inputs and outputs as Open Inference Protocol v2
tensors (name, datatype, shape), read from the task's schemas."""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel
from sparsepipe.server.tensors import describe_fields


class _Entity(BaseModel):
    word: str
    score: float


class _Inputs(BaseModel):
    sequences: Union[str, list[Union[str, list[str]]]]
    images: Any = None
    count: Optional[int] = None
    flag: bool = False


class _Outputs(BaseModel):
    labels: list[Union[str, list[str]]]
    scores: list[Union[float, list[float]]]
    boxes: list[list[list[float]]]
    entities: list[list[_Entity]]
    ids: list[int]


def test_fields_become_tensors_by_type():
    assert describe_fields(_Inputs, outputs=False) == [
        {"name": "sequences", "datatype": "BYTES", "shape": [-1]},
        {"name": "images", "datatype": "BYTES", "shape": [-1]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1]},
    ]
    assert describe_fields(_Outputs, outputs=True) == [
        {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "boxes", "datatype": "FP32", "shape": [-1, -1, -1]},
        {"name": "entities", "datatype": "BYTES", "shape": [-1]},
        {"name": "ids", "datatype": "INT64", "shape": [-1]},
    ]


def test_every_built_in_task_is_described():
    from sparsepipe.registry import lookup, registered_tasks

    for task in registered_tasks():
        cls = lookup(task).cls
        if not isinstance(cls.__dict__.get("input_schema"), type):
            continue  # schemas given at create time (custom)
        for schema, outputs in ((cls.input_schema, False), (cls.output_schema, True)):
            tensors = describe_fields(schema, outputs=outputs)
            assert [t["name"] for t in tensors] == list(schema.model_fields)
            assert all(t["datatype"] in ("BYTES", "FP32", "INT64", "BOOL") for t in tensors)
            assert all(t["shape"] and set(t["shape"]) == {-1} for t in tensors)
