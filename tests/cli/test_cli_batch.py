"""``sparsepipe batch``: JSON Lines, CSV and Parquet in and out, carried columns, row errors,
resumable shards (killed and rerun), job signatures and one-line errors for bad arguments."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sparsepipe import Pipeline, tabular
from sparsepipe.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = ["a joyous, warm film", "dull and lifeless", "an instant classic", "I want my money back"]


@pytest.fixture(scope="module")
def sentiment() -> Pipeline:
    return Pipeline.create("text-classification")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _rows(n: int) -> list[dict]:
    return [{"id": i, "text": TEXTS[i % len(TEXTS)], "meta": {"n": i}} for i in range(n)]


def _batch(*args: str) -> list[str]:
    return ["batch", "--task", "text-classification", "--quiet", *args]


def test_jsonl_to_jsonl_keeps_order_and_columns(tmp_path, sentiment, capsys):
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(10))
    out = tmp_path / "out.jsonl"
    rc = main(_batch("--input", str(src), "--output", str(out), "--column", "text"))
    assert rc == 0, capsys.readouterr().err
    rows = _read_jsonl(out)
    assert [r["id"] for r in rows] == list(range(10))
    assert list(rows[0]) == ["id", "text", "meta", "labels", "scores", "error"]
    want = sentiment(sequences=[r["text"] for r in rows])
    assert [r["labels"] for r in rows] == want.labels
    assert [r["scores"] for r in rows] == want.scores
    assert all(r["meta"] == {"n": r["id"]} and r["error"] is None for r in rows)
    assert not (tmp_path / "out.jsonl.shards").exists()
    assert "wrote 10 row(s)" in capsys.readouterr().err


def test_shards_join_in_input_order(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(23))
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert main(_batch("--input", str(src), "--output", str(one), "--column", "text")) == 0
    args = ["--input", str(src), "--output", str(many), "--column", "text", "--shard-size", "5"]
    assert main(_batch(*args)) == 0
    assert one.read_bytes() == many.read_bytes()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])  # -sig: a spreadsheet's export
def test_csv_in_parquet_out(tmp_path, sentiment, encoding):
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(["id", "sequences"])
        writer.writerows([i, t] for i, t in enumerate(TEXTS))
    out = tmp_path / "out.parquet"
    assert main(_batch("--input", str(src), "--output", str(out), "--shard-size", "3")) == 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "sequences", "labels", "scores", "error"]
    assert table["id"].to_pylist() == ["0", "1", "2", "3"]  # CSV values are strings
    assert table["labels"].to_pylist() == sentiment(sequences=TEXTS).labels


def test_parquet_in_jsonl_out(tmp_path, sentiment):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [10, 11], "text": TEXTS[:2], "tags": [["a"], []]}), src)
    out = tmp_path / "out.jsonl"
    assert main(_batch("--input", str(src), "--output", str(out), "--column", "text")) == 0
    rows = _read_jsonl(out)
    assert [(r["id"], r["tags"]) for r in rows] == [(10, ["a"]), (11, [])]
    assert [r["labels"] for r in rows] == sentiment(sequences=TEXTS[:2]).labels


def test_failed_rows_are_recorded_and_the_exit_status_says_so(tmp_path, capsys):
    rows = _rows(6)
    rows[0]["text"] = rows[1]["text"] = None  # the whole first shard fails
    rows[4]["text"] = None
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    args = ["--input", str(src), "--output", str(out), "--column", "text", "--shard-size", "2"]
    assert main(_batch(*args)) == 1
    assert "3 of 6 row(s) failed (3 recorded with their error)" in capsys.readouterr().err
    table = pq.read_table(out)
    errors = table["error"].to_pylist()
    assert [e is None for e in errors] == [False, False, True, True, False, True]
    assert "valid string (got NoneType)" in errors[4]
    assert table["labels"].to_pylist()[:2] == [None, None]
    assert table["scores"].type == pa.float64() and table["labels"].type == pa.string()


def test_a_column_of_mixed_types_is_recorded_in_jsonl_and_refused_by_parquet(tmp_path, capsys):
    rows = _rows(3)
    rows[1]["text"] = 7
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(_batch("--input", str(src), "--output", str(out), "--column", "text")) == 1
    assert "valid string (got int)" in _read_jsonl(out)[1]["error"]
    capsys.readouterr()
    parquet = tmp_path / "out.parquet"
    assert main(_batch("--input", str(src), "--output", str(parquet), "--column", "text")) == 1
    err = capsys.readouterr().err
    assert "column 'text' holds values of different types (int, str)" in err
    assert "write .jsonl instead" in err and len(err.strip().splitlines()) == 1


def test_on_error_skip_and_raise(tmp_path, capsys):
    rows = _rows(5)
    rows[2]["text"] = None
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    base = ["--input", str(src), "--column", "text"]
    assert main(_batch(*base, "--output", str(out), "--on-error", "skip")) == 1
    assert "1 of 5 row(s) failed (1 skipped)" in capsys.readouterr().err
    kept = _read_jsonl(out)
    assert [r["id"] for r in kept] == [0, 1, 3, 4] and "error" not in kept[0]
    raised = tmp_path / "raised.jsonl"
    assert main(_batch(*base, "--output", str(raised), "--on-error", "raise")) == 1
    err = capsys.readouterr().err
    assert "sparsepipe: error: row 2: invalid input: sequences" in err
    assert "Traceback" not in err and not raised.exists()


def test_question_answering_columns_by_field(tmp_path, shared_dir):
    src = _write_jsonl(
        tmp_path / "in.jsonl",
        [{"q": "Who?", "ctx": "John went home."}, {"q": "", "ctx": "x"}],
    )
    out = tmp_path / "out.jsonl"
    args = ["batch", "--task", "question-answering", "--quiet", "--input", str(src)]
    args += ["--model-path", str(shared_dir / "reference/nlp/question-answering")]
    args += ["--output", str(out), "--column", "question=q", "--column", "context=ctx"]
    assert main(args) == 1
    ok, bad = _read_jsonl(out)
    assert ok["answer"] == "John" and json.loads(ok["answers"])[0]["answer"] == "John"
    assert bad["answer"] is None and "cannot be empty" in bad["error"]


def test_a_partial_job_with_another_signature_is_refused(tmp_path, capsys):
    rows = _rows(9)
    rows[7]["text"] = None
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ["--input", str(src), "--output", str(out), "--column", "text", "--shard-size", "3"]
    assert main(_batch(*args, "--on-error", "raise")) == 1  # stops in the third shard
    shards = tmp_path / "out.jsonl.shards"
    assert sorted(p.name for p in shards.iterdir()) == [
        "manifest.json",
        "part-00000.jsonl",
        "part-00001.jsonl",
    ]
    capsys.readouterr()
    assert main(_batch(*args)) == 1  # on_error differs
    err = capsys.readouterr().err
    assert "holds the shards of another job" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(_batch(*args, "--overwrite")) == 1  # record: one row fails, the job finishes
    assert [r["error"] is None for r in _read_jsonl(out)].count(False) == 1
    assert not shards.exists()


@pytest.mark.slow
def test_killed_job_resumes_and_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    rows = _rows(1000)
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    args = ["--input", str(src), "--column", "text", "--shard-size", "100"]
    assert main(_batch(*args, "--output", str(whole))) == 0

    cmd = [sys.executable, "-m", "sparsepipe", *_batch(*args, "--output", str(resumed))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = tmp_path / "resumed.jsonl.shards" / "manifest.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(manifest.read_text())["done"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    finished = len(json.loads(manifest.read_text())["done"])
    assert 1 <= finished < 10 and not resumed.exists()

    seen = []
    run = tabular.RowRunner.run

    def counting(self, rows, start=0):
        seen.append(len(rows))
        return run(self, rows, start)

    monkeypatch.setattr(tabular.RowRunner, "run", counting)
    capsys.readouterr()
    assert main(_batch(*args, "--output", str(resumed))) == 0
    assert f"resuming; {finished} finished shard(s)" in capsys.readouterr().err
    assert sum(seen) == 1000 - 100 * finished
    assert _read_jsonl(resumed) == _read_jsonl(whole)
    assert resumed.read_bytes() == whole.read_bytes()
    assert not (tmp_path / "resumed.jsonl.shards").exists()


def test_empty_input_gives_an_empty_output(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("")
    out = tmp_path / "out.jsonl"
    assert main(_batch("--input", str(src), "--output", str(out))) == 0
    assert out.read_text() == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "{tmp}/out.csv"], "unsupported suffix '.csv'; use one of .jsonl"),
        (["--shard-size", "0"], "--shard-size must be an integer >= 1, got 0"),
        (["--on-error", "ignore"], "--on-error must be one of raise, skip, record"),
        (["--concurrency", "2"], "--concurrency applies to Ray runs; pass --ray-address"),
        (
            ["--column", "nope"],
            "no column 'nope' (for input field 'sequences'); its columns: id, text, meta",
        ),
        (["--column", "a", "--column", "b"], "--column takes one column name"),
        (["--column", "sequences=text", "--column", "x"], "FIELD=COLUMN expected, got 'x'"),
        (["--option", "top_k"], "--option takes KEY=VALUE"),
        (["--option", "batch_size=3"], "batch_size is set by --batch-size; use that instead"),
        (["--option", "num_threads=1"], "num_threads is set by --num-threads"),
        (["--option", "model_path=x"], "model_path is set by --model-path"),
        (["--option", "colour=1"], "unknown option(s) for task 'text-classification': colour"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, extra, message):
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(2))
    args = ["--input", str(src), "--output", str(tmp_path / "out.jsonl"), "--column", "text"]
    extra = [e.format(tmp=tmp_path) for e in extra]
    if "--column" in extra:
        args = args[:-2]
    if "--output" in extra:
        args = args[:2]
    assert main(_batch(*args, *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("sparsepipe: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(2))
    out = tmp_path / "out.jsonl"
    out.write_text("")
    cases = [
        (
            ["--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o.jsonl")],
            "not a file",
        ),
        (
            ["--input", str(src), "--output", str(out)],
            "already exists; delete it or pass --overwrite",
        ),
        (["--input", str(src), "--output", str(tmp_path / "no" / "o.jsonl")], "does not exist"),
        (["--input", str(tmp_path / "in.txt"), "--output", str(out)], "unsupported suffix '.txt'"),
    ]
    for args, message in cases:
        assert main(_batch(*args, "--column", "text")) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n[1, 2]\n')
    args = ["--input", str(bad), "--output", str(tmp_path / "b.jsonl"), "--column", "text"]
    assert main(_batch(*args)) == 1
    err = capsys.readouterr().err
    assert "line 2 is a JSON list; each line must be a JSON object" in err
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    args = ["--input", str(latin), "--output", str(tmp_path / "l.jsonl"), "--column", "text"]
    assert main(_batch(*args)) == 1
    err = capsys.readouterr().err
    assert f"{latin} is not UTF-8 text" in err and "save it as UTF-8" in err, err
    wide = tmp_path / "wide.csv"
    wide.write_text("text\nshort\n" + "x" * 200_000 + "\n", encoding="utf-8")
    args = ["--input", str(wide), "--output", str(tmp_path / "w.jsonl"), "--column", "text"]
    assert main(_batch(*args)) == 1
    err = capsys.readouterr().err
    assert f"{wide} near line 3: not readable CSV" in err, err
    assert len(err.strip().splitlines()) == 1


def test_unknown_task_and_missing_required_arguments(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(1))
    args = ["batch", "--task", "nope", "--input", str(src), "--output", str(tmp_path / "o.jsonl")]
    assert main(args) == 1
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["batch", "--task", "text-classification"])
    assert e.value.code == 2
    assert "--input" in capsys.readouterr().err
