"""Pipeline base: registry, custom tasks (class and function based), batching, configs, timings."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest
import sparsepipe
from pydantic import BaseModel, ValidationError
from sparsepipe import ConfigError, InputError, Pipeline, PipelineConfig
from sparsepipe.pipeline import normalize_task, registered_tasks


@pytest.fixture(scope="module")
def mlp(model_zoo):
    path, model = model_zoo.get("mlp", 0.8)
    import onnx_models

    x = onnx_models.sample_inputs(model, 7)["x"]
    return path, x


class ScaleInput(BaseModel):
    values: list[list[float]]
    scale: float = 1.0


class ScaleOutput(BaseModel):
    scores: list[list[float]]


def _register_scale(name: str, with_kwargs: bool = True):
    @Pipeline.register(name, task_aliases=(f"{name} alias",))
    class ScalePipeline(Pipeline):
        input_schema = ScaleInput
        output_schema = ScaleOutput

        def __init__(self, *, multiplier: float = 1.0, **kwargs: Any) -> None:
            self.multiplier = multiplier
            super().__init__(**kwargs)

        def process_inputs(self, inputs: ScaleInput):
            return [np.asarray(inputs.values, np.float32)], {"scale": inputs.scale}

        if with_kwargs:

            def process_engine_outputs(self, engine_outputs, **kwargs):
                return {"scores": (engine_outputs[0] * kwargs["scale"] * self.multiplier).tolist()}
        else:

            def process_engine_outputs(self, engine_outputs):
                return ScaleOutput(scores=(engine_outputs[0] * self.multiplier).tolist())

    return ScalePipeline


def test_task_names_are_normalised_and_aliases_resolve():
    assert normalize_task(" Question_Answering ") == "question-answering"
    tasks = registered_tasks()
    assert {"text-classification", "token-classification", "question-answering", "custom"} <= set(
        tasks
    )
    assert {"glue", "sentiment-analysis"} <= set(tasks["text-classification"])
    assert tasks["token-classification"] == ["ner"]
    assert tasks["question-answering"] == ["qa"]
    for spelling in ("Sentiment Analysis", "sentiment_analysis", "GLUE", "text-classification"):
        assert type(Pipeline.create(spelling)).task == "text-classification"


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"unknown task 'translation'.*text-classification"):
        Pipeline.create("translation")


def test_custom_pipeline_subclass_deepsparse_style(mlp, ort_run):
    path, x = mlp
    cls = _register_scale("scale-test")
    pipe = Pipeline.create("Scale Test Alias", model_path=path, multiplier=2.0, batch_size=3)
    assert isinstance(pipe, cls)
    out = pipe(values=x.tolist(), scale=0.5)
    ref = ort_run(path, {"x": x})[0]
    np.testing.assert_allclose(out.scores, ref, rtol=1e-4, atol=1e-4)
    # positional raw value, and the schema object itself
    assert pipe(x.tolist()).scores == pipe(ScaleInput(values=x.tolist())).scores
    with pytest.raises(ValidationError):
        pipe(values="not a matrix")
    with pytest.raises(InputError, match=r"expected a ScaleInput"):
        pipe(ScaleOutput(scores=[]))


def test_context_only_reaches_methods_with_kwargs(mlp):
    path, x = mlp
    _register_scale("scale-no-kwargs", with_kwargs=False)
    pipe = Pipeline.create("scale-no-kwargs", model_path=path)
    assert len(pipe(values=x.tolist()).scores) == len(x)


def test_registration_requires_the_abstract_methods():
    with pytest.raises(TypeError, match=r"must define.*process_engine_outputs"):

        @Pipeline.register("broken-task")
        class Broken(Pipeline):
            input_schema = ScaleInput
            output_schema = ScaleOutput

            def process_inputs(self, inputs):
                return []

    with pytest.raises(TypeError, match=r"Pipeline subclasses"):
        Pipeline.register("not-a-pipeline")(dict)


def test_function_based_custom_task(mlp, ort_run):
    path, x = mlp
    seen = {}

    def pre(inputs):
        return [np.asarray(inputs, np.float32)], {"note": "ctx"}

    def post(outputs, **context):
        seen.update(context)
        return {"argmax": outputs[0].argmax(-1).tolist()}

    pipe = Pipeline.create(
        "custom", model_path=path, process_inputs_fn=pre, process_outputs_fn=post, batch_size=2
    )
    out = pipe(x)
    assert out.argmax == ort_run(path, {"x": x})[0].argmax(-1).tolist()
    assert seen == {"note": "ctx"}
    with pytest.raises(ConfigError, match=r"cannot be saved"):
        pipe.to_config()
    with pytest.raises(ConfigError, match=r"callable"):
        Pipeline.create("custom", model_path=path, process_inputs_fn=3)
    with pytest.raises(ConfigError, match=r"model_path"):
        Pipeline.create("custom")


def test_function_based_custom_task_with_schemas(mlp):
    path, x = mlp
    pipe = Pipeline.create(
        "custom",
        model_path=path,
        input_schema=ScaleInput,
        output_schema=ScaleOutput,
        process_inputs_fn=lambda inp: [np.asarray(inp.values, np.float32) * inp.scale],
        process_outputs_fn=lambda out: {"scores": out[0].tolist()},
    )
    assert isinstance(pipe(values=x.tolist()), ScaleOutput)


class _CountingEngine:
    def __init__(self, engine):
        self.engine = engine
        self.shapes = []

    def run(self, arrays):
        self.shapes.append([a.shape for a in arrays])
        return self.engine.run(arrays)

    def __getattr__(self, name):
        return getattr(self.engine, name)


@pytest.mark.parametrize("batch_size, calls", [(1, 7), (2, 4), (3, 3), (7, 1), (16, 1), (None, 1)])
def test_batching_splits_into_engine_calls(mlp, ort_run, batch_size, calls):
    path, x = mlp
    pipe = Pipeline.create(
        "custom",
        model_path=path,
        batch_size=batch_size,
        process_inputs_fn=lambda v: [np.asarray(v, np.float32)],
        process_outputs_fn=lambda out: {"y": out[0]},
    )
    pipe.engine = _CountingEngine(pipe.engine)
    out = pipe(x)
    assert len(pipe.engine.shapes) == calls
    np.testing.assert_allclose(out.y, ort_run(path, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_text_batches_are_padded_per_chunk(shared_dir):
    model = shared_dir / "reference" / "nlp" / "text-classification"
    texts = ["short", "a much longer text " * 6, "mid length text here", "x"]
    pipe = Pipeline.create("text-classification", model, batch_size=2)
    pipe.engine = _CountingEngine(pipe.engine)
    pipe(texts)
    lengths = sorted(shapes[0][1] for shapes in pipe.engine.shapes)
    assert all(n % 8 == 0 for n in lengths) and lengths[0] < lengths[-1]
    assert [shapes[0][0] for shapes in pipe.engine.shapes] == [2, 2]

    buckets = Pipeline.create("text-classification", model, batch_size=4, sequence_length=[16, 64])
    buckets.engine = _CountingEngine(buckets.engine)
    buckets(["tiny"])
    buckets(texts)
    assert [s[0][1] for s in buckets.engine.shapes] == [16, 64]

    fixed = Pipeline.create("text-classification", model, sequence_length=48)
    fixed.engine = _CountingEngine(fixed.engine)
    fixed("tiny")
    assert fixed.engine.shapes[0][0] == (1, 48)


def test_timings_after_each_call():
    pipe = Pipeline.create("sentiment-analysis")
    assert pipe.timings is None
    pipe("fine")
    t = pipe.timings
    assert t.total >= t.pre + t.engine + t.post - 1e-6
    assert min(t.pre, t.engine, t.post) >= 0 and t.engine > 0
    assert set(t.as_dict()) == {"pre", "engine", "post", "total"}


def test_per_call_options_are_thread_safe():
    pipe = Pipeline.create("sentiment-analysis", top_k=None)
    errors = []

    def worker(k):
        try:
            for _ in range(20):
                out = pipe("I loved it", top_k=k)
                assert (k == 1) == isinstance(out.labels[0], str)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pipe.options.top_k is None


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trip(tmp_path, suffix):
    pipe = Pipeline.create(
        "ner", aggregation_strategy="simple", batch_size=4, sequence_length=[32, 128]
    )
    cfg = pipe.to_config()
    assert cfg.task == "token-classification" and cfg.model_path == "zoo:pii-ner-minilm"
    assert cfg.kwargs["aggregation_strategy"] == "simple" and cfg.sequence_length == [32, 128]
    path = tmp_path / f"pipeline{suffix}"
    data = cfg.model_dump()
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    again = Pipeline.from_config(path)
    assert again.to_config() == cfg
    assert Pipeline.from_config(cfg).to_config() == cfg
    assert Pipeline.from_config(data).to_config() == cfg
    text = "Call John Smith at 555-0100"
    assert again(text) == pipe(text)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"task": "ner", "batch_sise": 2}, "batch_sise"),
        ({"task": "ner", "engine_type": "tensorrt"}, "engine_type"),
        ({"task": "ner", "batch_size": 0}, "batch_size"),
        ({"model_path": "x"}, "task"),
        ({"task": "ner", "kwargs": {"aggregation_strategy": "nope"}}, "aggregation_strategy"),
    ],
)
def test_bad_configs(config, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline.from_config(config)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read"):
        Pipeline.from_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed")
    with pytest.raises(ConfigError, match=r"not valid"):
        Pipeline.from_config(bad)
    txt = tmp_path / "cfg.txt"
    txt.write_text("{}")
    with pytest.raises(ConfigError, match=r"\.yaml"):
        Pipeline.from_config(txt)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"engine_type": "tensorrt"}, "engine_type"),
        ({"num_threads": -1}, "num_threads"),
        ({"batch_size": "4"}, "batch_size"),
        ({"model_path": "/nonexistent/model.onnx"}, "does not exist"),
    ],
)
def test_bad_create_arguments(kwargs, match):
    with pytest.raises(sparsepipe.SparsepipeError, match=match):
        Pipeline.create("sentiment-analysis", **kwargs)


def test_onnxruntime_engine_type_agrees():
    ours = Pipeline.create("sentiment-analysis", top_k=None)
    ort = Pipeline.create("sentiment-analysis", top_k=None, engine_type="onnxruntime")
    texts = ["a wonderful, moving film", "dull and far too long", ""]
    a, b = ours(texts), ort(texts)
    assert a.labels == b.labels
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert type(ort.engine).__name__ == "OnnxRuntimeEngine"


def test_pipeline_config_schema():
    cfg = PipelineConfig(task="qa", model_path="m/", kwargs={"top_k": 2})
    assert cfg.batch_size == 1 and cfg.engine_type == "sparsepipe"


def _scalar_model(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])],
        "scaled",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("engine_type", ["sparsepipe", "onnxruntime"])
def test_batching_passes_non_batch_inputs_to_every_chunk(tmp_path, engine_type):
    path = _scalar_model(tmp_path / "scaled.onnx")
    pipe = Pipeline.create(
        "custom",
        model_path=path,
        batch_size=2,
        engine_type=engine_type,
        process_inputs_fn=lambda v: [np.asarray(v, np.float32), np.float32(2.0)],
        process_outputs_fn=lambda out: {"y": out[0]},
    )
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_allclose(pipe(x).y, x * 2)
    with pytest.raises(InputError, match="no items"):
        pipe(np.zeros((0, 3), np.float32))


def test_per_call_options_do_not_leak_into_nested_pipelines(shared_dir):
    sentiment = Pipeline.create("sentiment-analysis")

    @Pipeline.register("ner-with-sentiment")
    class NerWithSentiment(type(Pipeline.create("ner"))):
        def process_engine_outputs(self, engine_outputs, **context):
            out = super().process_engine_outputs(engine_outputs, **context)
            self.inner = sentiment(context["texts"][0])  # runs while our per-call options are set
            return out

    pipe = Pipeline.create("ner-with-sentiment")
    pipe("Maria lives in Austin", aggregation_strategy="simple")
    assert isinstance(pipe.inner.labels[0], str)  # sentiment kept its own top_k=1


def test_context_reaches_named_parameters(mlp):
    path, x = mlp

    @Pipeline.register("named-context")
    class Named(Pipeline):
        input_schema = ScaleInput
        output_schema = ScaleOutput

        def process_inputs(self, inputs):
            return [np.asarray(inputs.values, np.float32)], {"n": 2, "unused": 1}

        def process_engine_outputs(self, engine_outputs, n=None):
            return ScaleOutput(scores=engine_outputs[0][:n].tolist())

    assert len(Pipeline.create("named-context", model_path=path)(values=x.tolist()).scores) == 2


def test_config_keeps_subclass_init_options(mlp):
    path, _ = mlp
    _register_scale("scale-config")
    pipe = Pipeline.create("scale-config", model_path=path, multiplier=3.0)
    cfg = pipe.to_config()
    assert cfg.kwargs == {"multiplier": 3.0}
    assert Pipeline.from_config(cfg).multiplier == 3.0

    class Unregistered(type(pipe)):
        pass

    with pytest.raises(ConfigError, match="not registered"):
        Unregistered(model_path=path).to_config()


def test_registering_over_another_task_warns(mlp):
    _register_scale("scale-a")
    with pytest.warns(UserWarning, match="'scale-a-alias' now names task 'scale-b'"):

        @Pipeline.register("scale-b", task_aliases=("scale-a alias",))
        class B(Pipeline):
            input_schema = ScaleInput
            output_schema = ScaleOutput

            def process_inputs(self, inputs):
                return []

            def process_engine_outputs(self, engine_outputs, **kwargs):
                return {}

    assert "scale-a-alias" in registered_tasks()["scale-b"]


def test_unknown_option_lists_init_options():
    with pytest.raises(ConfigError, match=r"sequence_length.*top_k"):
        Pipeline.create("sentiment-analysis", sequence_lenght=64)


def test_timings_are_per_thread():
    pipe = Pipeline.create("sentiment-analysis")
    pipe("short")
    mine = pipe.timings
    t = threading.Thread(target=lambda: pipe("a much longer text " * 20))
    t.start()
    t.join()
    assert pipe.timings is mine


def test_text_padding_counts_as_pre_processing_not_engine_time():
    import time

    pipe = Pipeline.create("sentiment-analysis")
    build = pipe._arrays
    inside: list[float] = []

    def slow_padding(batch):
        time.sleep(0.2)
        return build(batch)

    class TimedEngine:
        def __init__(self, engine):
            self.engine = engine
            self.input_names = engine.input_names

        def run(self, arrays):
            t = time.perf_counter()
            out = self.engine.run(arrays)
            inside.append(time.perf_counter() - t)
            return out

    pipe._arrays = slow_padding
    pipe.engine = TimedEngine(pipe.engine)
    pipe(["fine", "not fine at all"])
    t = pipe.timings
    assert t.pre >= 0.2
    assert sum(inside) <= t.engine < sum(inside) + 0.01  # the padding's sleep is not in it
    assert t.total >= t.pre + t.engine + t.post - 1e-6


def test_process_inputs_may_return_engine_inputs(mlp, ort_run):
    from sparsepipe.pipeline import EngineInputs

    path, x = mlp

    @Pipeline.register("typed-return")
    class Typed(Pipeline):
        input_schema = ScaleInput
        output_schema = ScaleOutput

        def process_inputs(self, inputs):
            return EngineInputs([np.asarray(inputs.values, np.float32)], {"scale": inputs.scale})

        def process_engine_outputs(self, engine_outputs, scale):
            return {"scores": (engine_outputs[0] * scale).tolist()}

    out = Pipeline.create("typed-return", path)(values=x.tolist(), scale=2.0)
    np.testing.assert_allclose(out.scores, ort_run(path, {"x": x})[0] * 2.0, rtol=1e-4, atol=1e-5)
