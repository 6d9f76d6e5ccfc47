"""The function-based ``custom`` task: any ONNX model with user pre/post-processing functions."""

from __future__ import annotations

from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError
from ..pipeline import Pipeline, context_parameters

__all__ = ["CustomTaskInput", "CustomTaskOutput", "CustomTaskPipeline"]


class CustomTaskInput(BaseModel):
    """Default input schema: any value, handed to ``process_inputs_fn`` as it is."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    inputs: Any


class CustomTaskOutput(BaseModel):
    """Default output schema: the fields of the dict ``process_outputs_fn`` returns."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


@Pipeline.register("custom")
class CustomTaskPipeline(Pipeline):
    """Runs ``process_inputs_fn`` -> engine -> ``process_outputs_fn(outputs, **context)``.

    ``process_inputs_fn(inputs)`` returns the engine arrays or ``(arrays, context_dict)``; it gets
    the ``input_schema`` instance when a schema is given, else the raw value passed to the call.
    Without ``output_schema``, a returned dict becomes a `CustomTaskOutput`; others pass as is.
    """

    def __init__(
        self,
        *,
        process_inputs_fn: Optional[Callable[..., Any]] = None,
        process_outputs_fn: Optional[Callable[..., Any]] = None,
        input_schema: Optional[type[BaseModel]] = None,
        output_schema: Optional[type[BaseModel]] = None,
        **kwargs: Any,
    ) -> None:
        for name, fn in (
            ("process_inputs_fn", process_inputs_fn),
            ("process_outputs_fn", process_outputs_fn),
        ):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be callable, got {type(fn).__name__}")
        for name, schema in (("input_schema", input_schema), ("output_schema", output_schema)):
            if schema is not None and not (
                isinstance(schema, type) and issubclass(schema, BaseModel)
            ):
                raise ConfigError(f"{name} must be a pydantic BaseModel class, got {schema!r}")
        self._in_fn = process_inputs_fn
        self._out_fn = process_outputs_fn
        self._in_schema = input_schema
        self._out_schema = output_schema
        self._out_context = (
            context_parameters(process_outputs_fn) if process_outputs_fn is not None else True
        )
        super().__init__(**kwargs)

    @property
    def input_schema(self) -> type[BaseModel]:
        """The schema given at create time, or `CustomTaskInput`."""
        return self._in_schema or CustomTaskInput

    @property
    def output_schema(self) -> type[BaseModel]:
        """The schema given at create time, or `CustomTaskOutput`."""
        return self._out_schema or CustomTaskOutput

    def process_inputs(self, inputs: BaseModel) -> Any:
        """``process_inputs_fn`` applied to the input (engine arrays pass through without one)."""
        value = inputs if self._in_schema is not None else inputs.inputs
        if self._in_fn is None:
            return value
        return self._in_fn(value)

    def process_engine_outputs(self, engine_outputs: Any, **kwargs: Any) -> Any:
        """``process_outputs_fn`` applied to the engine outputs (they pass through without one)."""
        if self._out_fn is None:
            return engine_outputs
        wanted = self._out_context
        if wanted is not True:
            kwargs = {k: v for k, v in kwargs.items() if k in wanted}
        return self._out_fn(engine_outputs, **kwargs)

    def example_inputs(self, batch_size: int, tokens: Optional[int] = None) -> tuple[dict, str]:
        """Never: what the functions take is unknown."""
        raise ConfigError(
            "the custom task needs Python pre/post-processing functions and cannot be "
            "benchmarked from the command line; pass the .onnx file to benchmark the engine"
        )

    def _config_kwargs(self) -> dict[str, Any]:
        raise ConfigError(
            "a custom-task pipeline holds Python functions and cannot be saved as a config"
        )
