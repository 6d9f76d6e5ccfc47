"""Ray Data batch inference: `PipelinePredictor`, the callable class given to
``Dataset.map_batches``, and what ``sparsepipe batch --ray-address`` runs on Ray."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from ..errors import ConfigError
from ..pipeline import Pipeline
from ..tabular import RowRunner

__all__ = ["PipelinePredictor", "connect", "disconnect", "predict_items"]


class PipelinePredictor:
    """Runs a task pipeline over Ray Data batches; each actor builds the pipeline once.

    ``ds.map_batches(PipelinePredictor, fn_constructor_kwargs={"task": ..., "input_column":
    "text"}, batch_size=..., concurrency=N)`` returns the input columns followed by one column per
    output field of the task (nested values as JSON strings) and an ``error`` column when
    ``on_error="record"`` (see `sparsepipe.tabular.RowRunner`). Batches are pandas DataFrames or
    dicts of numpy arrays, returned in the same format.
    """

    def __init__(
        self,
        task: str,
        model_path: Optional[Union[str, os.PathLike[str]]] = None,
        input_column: Union[str, Mapping[str, str], None] = None,
        on_error: str = "record",
        batch_size: Optional[int] = 1,
        num_threads: Optional[int] = None,
        **task_options: Any,
    ) -> None:
        pipeline = Pipeline.create(
            task, model_path, batch_size=batch_size, num_threads=num_threads, **task_options
        )
        self.runner = RowRunner(pipeline, input_column, on_error)

    @property
    def output_columns(self) -> list[str]:
        """The columns added to each batch."""
        return list(self.runner.output_columns)

    def __call__(self, batch: Any) -> Any:
        """The kept rows of ``batch`` with the output columns added, in the batch's format."""
        if isinstance(batch, Mapping):
            return self._numpy(batch)
        if hasattr(batch, "columns") and hasattr(batch, "iloc"):
            return self._pandas(batch)
        raise ConfigError(
            f"PipelinePredictor takes pandas or numpy batches, got {type(batch).__name__}; "
            "pass batch_format='pandas' or 'numpy' to map_batches"
        )

    def _run(
        self, columns: Mapping[str, Sequence[Any]], n: int
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """The positions of the kept rows and their output columns."""
        used = sorted(set(self.runner.columns.values()))
        rows = [{c: columns[c][i] for c in used} for i in range(n)]
        kept, outputs = [], []
        for i, result in enumerate(self.runner.outputs(rows)):
            if result is not None:
                kept.append(i)
                outputs.append(result)
        return kept, outputs

    def _pandas(self, df: Any) -> Any:
        self.runner.check_columns(df.columns)
        used = {c: df[c].tolist() for c in set(self.runner.columns.values())}
        kept, outputs = self._run(used, len(df))
        out = df.iloc[kept].copy() if len(kept) < len(df) else df.copy()
        for name in self.runner.output_columns:
            out[name] = [r[name] for r in outputs]
        return out

    def _numpy(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.runner.check_columns(batch.keys())
        n = len(next(iter(batch.values()))) if batch else 0
        kept, outputs = self._run(batch, n)
        out = {k: np.asarray(v)[kept] if len(kept) < n else v for k, v in batch.items()}
        for name in self.runner.output_columns:
            out[name] = _array([r[name] for r in outputs])
        return out


def _array(values: list[Any]) -> np.ndarray:
    kinds = {type(v) for v in values}
    if (kinds and kinds <= {int, float}) or kinds == {bool}:
        return np.asarray(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def connect(address: str, num_cpus: int = 1) -> bool:
    """Connects to the Ray cluster at ``address`` (``local`` starts one here with at least
    ``num_cpus`` CPUs) unless Ray is initialised already; True when this call connected."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address != "local":
        _check_reachable(address)
    try:
        if address == "local":
            cpus = max(os.cpu_count() or 1, num_cpus)
            ray.init(address="local", num_cpus=cpus, include_dashboard=False)
        else:
            ray.init(address=address)
    except ConnectionError as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    return True


def _check_reachable(address: str) -> None:
    """ConfigError when ``address`` names a host and port that do not accept connections (Ray
    itself keeps retrying for minutes)."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} ({e}); check the address and that "
            "the cluster is running"
        ) from None


def disconnect() -> None:
    """Disconnects from Ray (shutting down a cluster that `connect` started here)."""
    import ray

    ray.shutdown()


def predict_items(
    items: Sequence[Mapping[str, Any]],
    predictor_kwargs: Mapping[str, Any],
    *,
    batch_size: int,
    concurrency: int = 1,
    num_cpus: float = 1,
) -> Iterator[dict[str, Any]]:
    """The rows `PipelinePredictor` (built from ``predictor_kwargs``) returns for ``items`` (row
    dicts) on ``concurrency`` Ray actors, in item order, with numpy values made plain."""
    import ray

    from ..tabular import plain_value

    if not items:
        return
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    blocks = max(-(-len(items) // batch_size), min(concurrency, len(items)))
    ds = ray.data.from_items(list(items), override_num_blocks=blocks).map_batches(
        PipelinePredictor,
        fn_constructor_kwargs=dict(predictor_kwargs),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
    )
    for row in ds.iter_rows():
        yield {k: plain_value(v) for k, v in row.items()}
