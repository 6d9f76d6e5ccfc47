"""Running a task pipeline over table rows: what `sparsepipe batch` and
`sparsepipe.ray.PipelinePredictor` share.

A `RowRunner` reads each row's input from its columns, runs the rows through the pipeline (merged
into one call per chunk when the task declares `BatchFields`), and returns one output column per
output field of the task: scalars as they are, anything nested as a JSON string. A row that fails
is raised, skipped or recorded with its error message, as ``on_error`` says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
from pydantic import BaseModel, ValidationError

from .errors import ConfigError, InputError, SparsepipeError
from .pipeline import Pipeline

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ERROR_COLUMN",
    "ON_ERROR",
    "RowRunner",
    "check_on_error",
    "plain_value",
]

#: what a failing row does: "raise" stops, "skip" drops it, "record" keeps it with its error
ON_ERROR = ("raise", "skip", "record")
#: the output column holding a recorded row's error message (None when the row succeeded)
ERROR_COLUMN = "error"
#: rows merged into one pipeline call by default
DEFAULT_CHUNK_SIZE = 64

_SCALARS = (str, int, float, bool, type(None))


def check_on_error(value: Any, option: str = "on_error") -> str:
    """``value`` when it is one of `ON_ERROR`, else ConfigError naming ``option``."""
    if not isinstance(value, str) or value not in ON_ERROR:
        raise ConfigError(f"{option} must be one of {', '.join(ON_ERROR)}, got {value!r}")
    return value


def plain_value(value: Any) -> Any:
    """``value`` with numpy scalars and string/object arrays turned into Python values (a
    numeric array of two or more dimensions, such as an image, is kept as an array)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUSb" or value.ndim <= 1:
            return [plain_value(v) for v in value.tolist()]
        return value
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return value


def _encode(value: Any) -> Any:
    return value if isinstance(value, _SCALARS) else json.dumps(value)


def _message(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        return "invalid input: " + _validation_message(e)
    return " ".join(str(e).split()) or type(e).__name__


def _validation_message(e: ValidationError) -> str:
    """One error per input field, the one about the row's own value where there is one."""
    chosen: dict[str, tuple[bool, Any]] = {}
    for err in e.errors():
        loc = err.get("loc", ())
        field = str(loc[0]) if loc else ""
        about_item = any(isinstance(p, int) for p in loc)
        if field not in chosen or (about_item and not chosen[field][0]):
            chosen[field] = (about_item, err)
    parts = []
    for field, (about_item, err) in chosen.items():
        msg = " ".join(str(err.get("msg", "")).split())
        if field and about_item:
            msg = f"{field}: {msg} (got {type(err.get('input')).__name__})"
        elif field:
            msg = f"{field}: {msg}"
        parts.append(msg)
    return "; ".join(parts)


#: errors that a bad row can cause; anything else is a bug and propagates as it is
_ROW_ERRORS = (SparsepipeError, ValidationError, ValueError, TypeError, OSError)


class RowRunner:
    """Maps rows (dicts of column values) to output columns of ``pipeline``'s task.

    ``input_column``: None reads each input field of the task from the column of the same name;
    a column name makes the task's first input field read that column (the others their own
    names); a dict maps input fields to columns. ``on_error`` is one of `ON_ERROR`;
    ``chunk_size`` rows are merged into one pipeline call. ``column_option`` is how messages name
    the input column option (``--column`` on the command line).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        input_column: Union[str, Mapping[str, str], None] = None,
        on_error: str = "record",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        column_option: str = "input_column",
    ) -> None:
        self.pipeline = pipeline
        self.on_error = check_on_error(on_error)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.column_option = column_option
        self.input_model: type[BaseModel] = pipeline.input_schema
        self.output_model: type[BaseModel] = pipeline.output_schema
        self.batch_fields = type(pipeline).batch_fields
        if self.batch_fields is not None:
            self.batch_fields.check(self.input_model, self.output_model)
        #: input field -> the column it is read from
        self.columns: dict[str, str] = self._input_columns(input_column)
        fields = self.batch_fields.outputs if self.batch_fields else self.output_model.model_fields
        #: the task's output columns, then `ERROR_COLUMN` when errors are recorded
        self.output_columns: list[str] = list(fields)
        #: the task's output columns alone
        self.task_columns: list[str] = list(fields)
        if self.on_error == "record":
            self.output_columns.append(ERROR_COLUMN)

    @property
    def task(self) -> str:
        """The task name used in messages."""
        return self.pipeline.task or type(self.pipeline).__name__

    def _input_columns(self, given: Union[str, Mapping[str, str], None]) -> dict[str, str]:
        names = list(self.input_model.model_fields)
        option = self.column_option
        if given is None:
            return {f: f for f in names}
        if isinstance(given, str):
            if not given:
                raise ConfigError(f"{option} must be a non-empty column name")
            return {f: (given if i == 0 else f) for i, f in enumerate(names)}
        if isinstance(given, Mapping):
            unknown = [f for f in given if f not in names]
            if unknown:
                raise ConfigError(
                    f"{option} names {', '.join(map(repr, unknown))}, not input field(s) of "
                    f"{self.task}; its input fields: {', '.join(names)}"
                )
            bad = [c for c in given.values() if not isinstance(c, str) or not c]
            if bad:
                raise ConfigError(f"{option} maps input fields to column names; got {bad[0]!r}")
            return {f: given.get(f, f) for f in names}
        raise ConfigError(
            f"{option} must be a column name or a dict of input field to column name, "
            f"got {type(given).__name__}"
        )

    def check_columns(self, columns: Iterable[str]) -> None:
        """ConfigError unless ``columns`` hold every input column and none is named like an
        output column."""
        available = [str(c) for c in columns]
        missing = [(f, c) for f, c in self.columns.items() if c not in available]
        if missing:
            said = ", ".join(
                repr(c) if f == c else f"{c!r} (for input field {f!r})" for f, c in missing
            )
            raise ConfigError(
                f"the input has no column {said}; its columns: "
                f"{', '.join(available) or '(none)'}; set {self.column_option} to the column "
                f"holding the {self.task} input"
            )
        clash = [c for c in available if c in self.output_columns]
        if clash:
            raise ConfigError(
                f"input column(s) {', '.join(map(repr, clash))} have the name of an output "
                f"column of {self.task} ({', '.join(self.output_columns)}); rename them"
            )

    # ---- running -----------------------------------------------------------------------------

    def run(self, rows: Sequence[Mapping[str, Any]], start: int = 0) -> list[dict[str, Any]]:
        """Each kept row's columns followed by its output columns, in input order; ``start``
        is the position of the first row in messages."""
        out = []
        for row, result in zip(rows, self.outputs(rows, start)):
            if result is not None:
                out.append({**row, **result})
        return out

    def outputs(
        self, rows: Sequence[Mapping[str, Any]], start: int = 0
    ) -> list[Optional[dict[str, Any]]]:
        """One dict of output columns per row, in order (None for a row skipped by
        ``on_error="skip"``); ``start`` is the position of the first row in messages."""
        results: list[Optional[dict[str, Any]]] = []
        for lo in range(0, len(rows), self.chunk_size):
            chunk = rows[lo : lo + self.chunk_size]
            if self.batch_fields is None:
                results.extend(self._one(row, start + lo + i) for i, row in enumerate(chunk))
            else:
                results.extend(self._merged(chunk, start + lo))
        return results

    def _values(self, row: Mapping[str, Any], as_list: bool) -> dict[str, Any]:
        values = {}
        for field, column in self.columns.items():
            if column not in row:
                raise InputError(f"the row has no column {column!r}")
            value = plain_value(row[column])
            values[field] = [value] if as_list else value
        return values

    def _merged(self, rows: Sequence[Mapping[str, Any]], start: int) -> list[Any]:
        assert self.batch_fields is not None
        results: list[Any] = [None] * len(rows)
        bodies, where = [], []
        for i, row in enumerate(rows):
            try:
                bodies.append(self.input_model(**self._values(row, as_list=True)))
                where.append(i)
            except _ROW_ERRORS as e:
                results[i] = self._failed(e, start + i)
        if not bodies:
            return results
        try:
            merged, counts, singles = self.batch_fields.merge(bodies, self.input_model)
            output = self.pipeline(merged)
            parts = self.batch_fields.split(output, self.output_model, counts, singles)
        except _ROW_ERRORS:
            for i, body in zip(where, bodies):
                results[i] = self._single(body, start + i)
            return results
        for i, part in zip(where, parts):
            results[i] = self._columns(part, first_item=True)
        return results

    def _single(self, body: BaseModel, index: int) -> Any:
        try:
            return self._columns(self.pipeline(body), first_item=True)
        except _ROW_ERRORS as e:
            return self._failed(e, index)

    def _one(self, row: Mapping[str, Any], index: int) -> Any:
        try:
            return self._columns(self.pipeline(**self._values(row, as_list=False)))
        except _ROW_ERRORS as e:
            return self._failed(e, index)

    def _columns(self, output: Any, first_item: bool = False) -> dict[str, Any]:
        if isinstance(output, BaseModel):
            data = output.model_dump(mode="json")
        elif isinstance(output, Mapping):
            data = dict(output)
        else:
            raise InputError(
                f"{self.task} returned a {type(output).__name__}, not its output schema "
                f"{self.output_model.__name__}"
            )
        cols = {}
        for name in self.task_columns:
            value = data.get(name)
            if first_item and isinstance(value, list):
                value = value[0] if value else None
            cols[name] = _encode(value)
        if self.on_error == "record":
            cols[ERROR_COLUMN] = None
        return cols

    def _failed(self, e: Exception, index: int) -> Optional[dict[str, Any]]:
        if self.on_error == "raise":
            cls = type(e) if isinstance(e, SparsepipeError) else InputError
            raise cls(f"row {index}: {_message(e)}") from e
        return self.settle({}, _message(e), index)

    def settle(
        self, outputs: Mapping[str, Any], error: Optional[str], index: int
    ) -> Optional[dict[str, Any]]:
        """The output columns of row ``index`` from its task outputs or its error message (as
        a runner with ``on_error="record"`` reported them), as ``on_error`` says: raises
        InputError, returns None (skipped) or the columns with the error recorded."""
        if error is None:
            cols = {name: outputs.get(name) for name in self.task_columns}
            if self.on_error == "record":
                cols[ERROR_COLUMN] = None
            return cols
        if self.on_error == "raise":
            raise InputError(f"row {index}: {error}")
        if self.on_error == "skip":
            return None
        cols = {name: None for name in self.task_columns}
        cols[ERROR_COLUMN] = error
        return cols
