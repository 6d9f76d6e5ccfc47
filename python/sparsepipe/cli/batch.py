"""``sparsepipe batch``: a task pipeline over a JSON Lines, CSV or Parquet file, in process or on
Ray, written in resumable shards.

Rows are cut into shards of ``--shard-size`` rows by input position. Each finished shard is
written atomically into ``<output>.shards/`` next to a ``manifest.json`` holding the job's
signature, so a rerun of the same job skips the finished shards. When every shard is done, the
output is written atomically from the shards in order and the shards folder is removed.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import ConfigError, InputError
from ..tabular import DEFAULT_CHUNK_SIZE, ERROR_COLUMN, RowRunner, check_on_error
from .declarations import task_options

__all__ = ["DEFAULT_SHARD_SIZE", "INPUT_FORMATS", "OUTPUT_FORMATS", "add_parser", "run_batch"]

#: rows per shard by default
DEFAULT_SHARD_SIZE = 1000
#: file suffix -> format name of the files `sparsepipe batch` reads
INPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
#: file suffix -> format name of the files `sparsepipe batch` writes
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
MANIFEST = "manifest.json"
#: the hidden column that carries each row's input position through Ray
POSITION_COLUMN = "__sparsepipe_row"


# ---- options ------------------------------------------------------------------------------------


def _format(path: Path, formats: Mapping[str, str], option: str) -> str:
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{option} {path} has an unsupported suffix {path.suffix!r}; "
            f"use one of {', '.join(sorted(formats))}"
        )
    return fmt


def _positive(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be an integer >= 1, got {value!r}")
    return value


def _column_option(values: Optional[Sequence[str]]) -> Union[str, dict[str, str], None]:
    """``--column``: one column name, or FIELD=COLUMN pairs (repeatable)."""
    if not values:
        return None
    pairs = [v.partition("=") for v in values]
    if not any(sep for _, sep, _ in pairs):
        if len(values) > 1:
            raise ConfigError(
                "--column takes one column name, or FIELD=COLUMN for each input field "
                f"(repeatable); got {', '.join(values)}"
            )
        return values[0]
    bad = [v for v, (f, sep, c) in zip(values, pairs) if not (sep and f and c)]
    if bad:
        raise ConfigError(f"--column FIELD=COLUMN expected, got {bad[0]!r}")
    return {f: c for f, _, c in pairs}


def _model_key(model_path: Optional[str]) -> Optional[str]:
    """``--model-path`` as the job signature holds it: a local path made absolute."""
    if model_path is None or not Path(model_path).exists():
        return model_path
    return str(Path(model_path).resolve())


# ---- reading ------------------------------------------------------------------------------------


def _pyarrow(what: str) -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise ConfigError(
            f"{what} needs pyarrow ({e.name} is missing): pip install pyarrow "
            "(or pip install 'sparsepipe[ray]')"
        ) from e
    return pyarrow


def _read_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """The rows of ``path`` as dicts, in file order."""
    if fmt == "parquet":
        pa = _pyarrow(f"reading {path}")
        for batch in pa.parquet.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
        return
    try:
        yield from _read_text_rows(path, fmt)
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text ({e}); save it as UTF-8") from None


def _read_text_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    # utf-8-sig: a byte-order mark (spreadsheet exports write one) is not part of the first name
    with open(path, newline="" if fmt == "csv" else None, encoding="utf-8-sig") as f:
        if fmt == "csv":
            reader = csv.DictReader(f)
            try:
                yield from reader
            except csv.Error as e:
                where = f"{path} near line {reader.line_num + 1}"
                raise InputError(f"{where}: not readable CSV: {e}") from None
            return
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path} line {lineno} is not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise InputError(
                    f"{path} line {lineno} is a JSON {type(row).__name__}; each line must be "
                    "a JSON object of column values"
                )
            yield row


def _count_rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return _pyarrow(f"reading {path}").parquet.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in _read_rows(path, fmt))


def _columns(path: Path, fmt: str) -> Optional[list[str]]:
    """The input's columns (those of its first row for JSON Lines); None when it has no rows."""
    if fmt == "parquet":
        return list(_pyarrow(f"reading {path}").parquet.read_schema(path).names)
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
        return header
    first = next(_read_rows(path, fmt), None)
    return None if first is None else list(first)


# ---- writing ------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _atomic_write(path: Path, write: Any) -> None:
    """Runs ``write(temp_path)`` and moves the temporary file onto ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_rows(rows: Sequence[Mapping[str, Any]], path: Path, fmt: str) -> None:
    if fmt == "jsonl":

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")

    else:
        pa = _pyarrow(f"writing {path}")
        try:
            table = pa.Table.from_pylist(list(rows))
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise InputError(f"{_unstorable(pa, rows, e)}; write .jsonl instead") from None

        def write(tmp: Path) -> None:
            pa.parquet.write_table(table, tmp)

    _atomic_write(path, write)


def _unstorable(pa: Any, rows: Sequence[Mapping[str, Any]], error: Exception) -> str:
    """Which column of ``rows`` Parquet cannot store (values of different types)."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            pa.array(values)
        except (pa.ArrowException, TypeError, ValueError):
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            return (
                f"column {name!r} holds values of different types ({', '.join(kinds)}) that "
                "Parquet cannot store in one column"
            )
    return f"the rows cannot be stored as Parquet ({error})"


def _conform(pa: Any, table: Any, schema: Any) -> Any:
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(table[f.name].cast(f.type))
        else:
            columns.append(pa.nulls(len(table), f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _concatenate(parts: Sequence[Path], path: Path, fmt: str) -> None:
    """Writes the shard files ``parts`` in order into ``path``, atomically."""
    if fmt == "jsonl":

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out)

        _atomic_write(path, write)
        return
    pa = _pyarrow(f"writing {path}")
    schemas = [pa.parquet.read_schema(p) for p in parts]
    schemas = [s for s in schemas if len(s)] or [pa.schema([])]
    try:
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except TypeError:  # pyarrow < 14
            schema = pa.unify_schemas(schemas)
    except pa.ArrowException as e:
        raise InputError(
            f"the shards in {parts[0].parent} hold a column of different types ({e}) that "
            "Parquet cannot store in one column; write .jsonl instead"
        ) from None

    def write_parquet(tmp: Path) -> None:
        with pa.parquet.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                table = pa.parquet.read_table(part)
                if table.num_rows:
                    writer.write_table(_conform(pa, table, schema))

    _atomic_write(path, write_parquet)


# ---- shards -------------------------------------------------------------------------------------


class _Shards:
    """The shards folder of one job: its manifest and finished shard files."""

    def __init__(self, output: Path, fmt: str, signature: dict[str, Any], overwrite: bool) -> None:
        self.dir = output.with_name(output.name + ".shards")
        self.fmt = fmt
        self.suffix = ".jsonl" if fmt == "jsonl" else ".parquet"
        self.signature = signature
        self.done: dict[str, dict[str, int]] = {}
        manifest = self.dir / MANIFEST
        if self.dir.exists():
            try:
                previous = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if overwrite:
                shutil.rmtree(self.dir)
            elif not isinstance(previous, dict) or previous.get("signature") != signature:
                what = "another job" if isinstance(previous, dict) else "an unreadable manifest"
                raise ConfigError(
                    f"{self.dir} holds the shards of {what} (input, task, model, options or "
                    "shard size differ); delete that folder or pass --overwrite to start over"
                )
            else:
                done = previous.get("done", {})
                self.done = {k: v for k, v in done.items() if self.path(int(k)).exists()}
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save()

    def path(self, index: int) -> Path:
        """The file of shard ``index``."""
        return self.dir / f"part-{index:05d}{self.suffix}"

    def is_done(self, index: int) -> bool:
        """Whether shard ``index`` was finished by this run or an earlier one."""
        return str(index) in self.done

    def finish(self, index: int, rows: Sequence[Mapping[str, Any]], stats: dict[str, int]) -> None:
        """Writes shard ``index`` and records it as finished."""
        _write_rows(rows, self.path(index), self.fmt)
        self.done[str(index)] = stats
        self._save()

    def _save(self) -> None:
        data = {"signature": self.signature, "done": self.done}
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        _atomic_write(self.dir / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _stats(rows_in: int, kept: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    errors = sum(1 for r in kept if r.get(ERROR_COLUMN) is not None)
    return {"rows": rows_in, "written": len(kept), "errors": errors, "skipped": rows_in - len(kept)}


def _shards_of(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while True:
        shard = list(itertools.islice(rows, size))
        if not shard:
            return
        yield shard


# ---- running ------------------------------------------------------------------------------------


def _progress(total: int, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="batch", unit="row", file=sys.stderr, disable=quiet)


def _run_local(
    runner: RowRunner, shards: Iterator[list[dict[str, Any]]], state: _Shards, bar: Any, size: int
) -> None:
    for index, rows in enumerate(shards):
        if state.is_done(index):
            bar.update(len(rows))
            continue
        kept: list[dict[str, Any]] = []
        for lo in range(0, len(rows), runner.chunk_size):
            chunk = rows[lo : lo + runner.chunk_size]
            kept.extend(runner.run(chunk, start=index * size + lo))
            bar.update(len(chunk))
        state.finish(index, kept, _stats(len(rows), kept))


def _run_ray(
    runner: RowRunner,
    shards: Iterator[list[dict[str, Any]]],
    state: _Shards,
    bar: Any,
    size: int,
    predictor_kwargs: dict[str, Any],
    concurrency: int,
    cpus: int,
) -> None:
    from ..ray.data import predict_items

    pending: dict[int, list[dict[str, Any]]] = {}
    items = []
    used = sorted(set(runner.columns.values()))
    for index, rows in enumerate(shards):
        if state.is_done(index):
            bar.update(len(rows))
            continue
        pending[index] = rows
        for i, row in enumerate(rows):
            item = {c: row.get(c) for c in used}
            item[POSITION_COLUMN] = index * size + i
            items.append(item)
    outputs = predict_items(
        items,
        {**predictor_kwargs, "on_error": "record"},
        batch_size=runner.chunk_size,
        concurrency=concurrency,
        num_cpus=cpus,
    )
    results: dict[int, dict[int, tuple[dict[str, Any], Any]]] = {index: {} for index in pending}
    for out in outputs:
        index, offset = divmod(int(out[POSITION_COLUMN]), size)
        values = {c: out[c] for c in runner.task_columns}
        results[index][offset] = (values, out[ERROR_COLUMN])
        bar.update(1)
        rows = pending[index]
        if len(results[index]) < len(rows):
            continue
        kept = []
        for i, row in enumerate(rows):
            values, error = results[index][i]
            settled = runner.settle(values, error, index * size + i)
            if settled is not None:
                kept.append({**row, **settled})
        state.finish(index, kept, _stats(len(rows), kept))
        del results[index], pending[index]
    if pending:
        raise InputError(f"Ray returned no output for shard(s) {sorted(pending)}")


def run_batch(args: argparse.Namespace) -> int:
    """Runs ``sparsepipe batch`` with parsed ``args``; the exit status (1 when a row failed)."""
    from .. import Pipeline

    source, output = Path(args.input), Path(args.output)
    in_fmt = _format(source, INPUT_FORMATS, "--input")
    out_fmt = _format(output, OUTPUT_FORMATS, "--output")
    if not source.is_file():
        raise ConfigError(f"--input {source} is not a file")
    on_error = check_on_error(args.on_error, "--on-error")
    shard_size = _positive("--shard-size", args.shard_size)
    concurrency = None
    if args.concurrency is not None:
        if args.ray_address is None:
            raise ConfigError("--concurrency applies to Ray runs; pass --ray-address too")
        concurrency = _positive("--concurrency", args.concurrency)
    column = _column_option(args.column)
    options = task_options(
        args.option, {"batch_size": "--batch-size", "num_threads": "--num-threads"}
    )
    if output.exists() and not args.overwrite:
        raise ConfigError(f"--output {output} already exists; delete it or pass --overwrite")
    if output.resolve() == source.resolve():
        raise ConfigError("--output must differ from --input")
    if not output.parent.is_dir():
        raise ConfigError(f"the folder of --output {output} does not exist")
    if args.ray_address is not None:
        from ..ray import require_ray

        require_ray("sparsepipe batch --ray-address", ("data",))

    pipeline = Pipeline.create(
        args.task,
        args.model_path,
        batch_size=args.batch_size,
        num_threads=args.num_threads,
        **options,
    )
    chunk = max(DEFAULT_CHUNK_SIZE, pipeline.batch_size or 1)
    runner = RowRunner(pipeline, column, on_error, chunk_size=chunk, column_option="--column")
    columns = _columns(source, in_fmt)
    if columns is not None:
        runner.check_columns(columns)

    stat = source.stat()
    signature = {
        "input": str(source.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "task": pipeline.task,
        "model_path": _model_key(args.model_path),
        "column": column,
        "options": options,
        "shard_size": shard_size,
        "on_error": on_error,
        "output_format": out_fmt,
    }
    state = _Shards(output, out_fmt, signature, args.overwrite)
    total = _count_rows(source, in_fmt)
    if state.done:
        print(
            f"sparsepipe batch: resuming; {len(state.done)} finished shard(s) in {state.dir} "
            "are kept",
            file=sys.stderr,
        )
    shards = _shards_of(_read_rows(source, in_fmt), shard_size)
    bar = _progress(total, args.quiet)
    connected = False
    try:
        if args.ray_address is None:
            _run_local(runner, shards, state, bar, shard_size)
        else:
            from ..ray.data import connect

            cpus = args.num_threads or 1
            connected = connect(args.ray_address, (concurrency or 1) * cpus)
            kwargs = {
                "task": args.task,
                "model_path": args.model_path,
                "input_column": column,
                "batch_size": args.batch_size,
                "num_threads": cpus,
                **options,
            }
            _run_ray(runner, shards, state, bar, shard_size, kwargs, concurrency or 1, cpus)
    finally:
        bar.close()
        if connected:
            from ..ray.data import disconnect

            disconnect()

    count = -(-total // shard_size)
    _concatenate([state.path(i) for i in range(count)], output, out_fmt)
    stats = [state.done[str(i)] for i in range(count)]
    shutil.rmtree(state.dir)
    written = sum(s["written"] for s in stats)
    errors = sum(s["errors"] for s in stats)
    skipped = sum(s["skipped"] for s in stats)
    print(f"sparsepipe batch: wrote {written} row(s) to {output}", file=sys.stderr)
    if errors or skipped:
        said = f"{errors} recorded with their error" if errors else f"{skipped} skipped"
        print(
            f"sparsepipe batch: {errors + skipped} of {total} row(s) failed ({said})",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(subparsers: Any) -> None:
    """Adds the ``batch`` subcommand to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "batch",
        help="run a task over a .jsonl, .csv or .parquet file (in process or on Ray)",
        description=(
            "Run a task pipeline over every row of a table file and write the rows with the "
            "task's output columns added, in input order. Finished shards survive a crash: "
            "rerun the same command to resume."
        ),
    )
    p.add_argument("--task", required=True, help="the task name or alias")
    p.add_argument(
        "--model-path", default=None, help="model file or directory (default: the task's)"
    )
    p.add_argument("--input", required=True, help="a .jsonl, .csv or .parquet file")
    p.add_argument("--output", required=True, help="the .jsonl or .parquet file to write")
    p.add_argument(
        "--column",
        action="append",
        metavar="COLUMN",
        help="the column holding the task's (first) input (default: the input field's name), "
        "or FIELD=COLUMN for each input field (repeatable)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="items per engine run (default 1)")
    p.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="engine threads (default: all; on Ray: 1 per actor, each actor reserving as many "
        "CPUs as it has threads)",
    )
    p.add_argument("--option", action="append", help="task option KEY=VALUE (repeatable)")
    p.add_argument(
        "--on-error",
        default="record",
        help="a row that fails: record (default; its error in the error column), skip or raise",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        help=f"rows per resumable shard (default {DEFAULT_SHARD_SIZE})",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="run on Ray: 'local' (a local cluster), 'auto' or a cluster address",
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="Ray actors running the task (default 1)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the output and any earlier shards"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_batch)
