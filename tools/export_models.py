"""Export tiny random-weight Hugging Face models to ONNX: sparsepipe's exporter test corpus.

The corpus (``tests/data/exporters/``) holds small models exported the way today's tools
export them, so that the engine's tests meet the graph patterns that real exports contain:

1. transformers 5.x, legacy TorchScript exporter (``dynamo=False``), opset 17: every text
   architecture with every head, every vision architecture;
2. transformers 5.x, legacy exporter, opset 14: every text architecture, sequence classification;
3. transformers 4.x, legacy exporter, opset 14: every text architecture (sequence
   classification), BERT token classification and question answering, ViT and ResNet;
4. transformers 5.x, torch's dynamo exporter (``dynamo=True``), opset 20, weights saved as an
   external data file ``model.onnx.data``: BERT, DistilBERT, RoBERTa (sequence classification and
   question answering), ViT and ResNet;
5. two hand-made external-data variants of the legacy opset 17 BERT sequence classifier: one
   whose data lies in a subdirectory (``weights/bert.onnx_data``), one with a file per tensor.

Every model is built from a config object (nothing is downloaded from a hub), its floating-point
weights are redrawn to order one so that a wrong operator cannot hide, and everything is seeded.
Each export is checked with onnxruntime (CPUExecutionProvider) against the torch model on a
sample input (batch 2, sequence 7 with padding in the second row; random images) and on a second
shape (batch 3, sequence 11), to within 1e-4 relative to the largest output. An export or
onnxruntime failure does not stop the run: it is recorded under "failed" in ``manifest.json``.

This script is not run by CI; its output is committed.

Setup, outside the repository (transformers 5 needs Python 3.10+; the committed corpus was made
with Python 3.11, torch 2.15.0 (CPU), onnx 1.23.2, onnxruntime 1.32.0, onnxscript 0.7.2, and the
transformers versions below; manifest.json records them)::

    python3 -m venv /work/exportenv
    /work/exportenv/bin/pip install torch==2.15.0 onnx==1.23.2 onnxruntime==1.32.0 \\
        onnxscript==0.7.2 numpy ruff \\
        pyyaml regex tqdm requests typer safetensors httpx hf-xet shellingham
    # two transformers versions, each with its own hub client and tokenizers, in target dirs
    /work/exportenv/bin/pip install --no-deps --target /work/tf5 transformers==5.24.0 \\
        'huggingface_hub>=1.31,<2' 'tokenizers>=0.23.1,<0.24'
    /work/exportenv/bin/pip install --no-deps --target /work/tf4 transformers==4.46.3 \\
        'huggingface_hub>=0.23.2,<1.0' 'tokenizers>=0.20,<0.21'

Usage (from the repository root)::

    /work/exportenv/bin/python tools/export_models.py --tf4-dir /work/tf4 --tf5-dir /work/tf5

The script re-invokes itself once per transformers version (``--worker``) with that version's
directory first on ``sys.path``, then merges the workers' results into ``manifest.json``.
``--only REGEX`` re-exports only the models whose names match; the other models' directories and
manifest entries are kept. Without it, the corpus directory is emptied first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "exporters"

SEED = 1234
VOCAB_SIZE = 1000
TYPE_VOCAB_SIZE = 2
HIDDEN = 32
HEADS = 2
LAYERS = 2
INTERMEDIATE = 64
MAX_POSITIONS = 128
TEXT_SHAPES = ((2, 7), (3, 11))  # (batch, sequence) of the sample inputs checked with ORT
IMAGE_BATCHES = (2, 3)
RTOL = 1e-4

HEADS_SHORT = {
    "sequence-classification": "seqcls",
    "token-classification": "tokcls",
    "question-answering": "qa",
    "image-classification": "imgcls",
}
HEAD_CLASS = {
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "image-classification": "ForImageClassification",
}
TEXT_HEADS = ("sequence-classification", "token-classification", "question-answering")
NUM_LABELS = {"sequence-classification": 3, "token-classification": 5, "image-classification": 5}

_BERT_LIKE = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": INTERMEDIATE,
    "max_position_embeddings": MAX_POSITIONS,
}
# RoBERTa-style models number positions from padding_idx + 1, so they need two more slots.
_ROBERTA_LIKE = {**_BERT_LIKE, "max_position_embeddings": MAX_POSITIONS + 2, "type_vocab_size": 1}

# name -> (transformers class prefix, config kwargs, whether token_type_ids is an input)
TEXT_ARCHS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "bert": ("Bert", {**_BERT_LIKE, "type_vocab_size": TYPE_VOCAB_SIZE}, True),
    "distilbert": (
        "DistilBert",
        {
            "vocab_size": VOCAB_SIZE,
            "dim": HIDDEN,
            "n_layers": LAYERS,
            "n_heads": HEADS,
            "hidden_dim": INTERMEDIATE,
            "max_position_embeddings": MAX_POSITIONS,
        },
        False,
    ),
    "roberta": ("Roberta", dict(_ROBERTA_LIKE), False),
    "albert": (
        "Albert",
        {**_BERT_LIKE, "embedding_size": 16, "type_vocab_size": TYPE_VOCAB_SIZE},
        True,
    ),
    "electra": (
        "Electra",
        {**_BERT_LIKE, "embedding_size": 16, "type_vocab_size": TYPE_VOCAB_SIZE},
        True,
    ),
    "mpnet": ("MPNet", {**_BERT_LIKE, "max_position_embeddings": MAX_POSITIONS + 2}, False),
    "xlm-roberta": ("XLMRoberta", dict(_ROBERTA_LIKE), False),
    "mobilebert": (
        "MobileBert",
        {
            **_BERT_LIKE,
            "hidden_size": 64,
            "embedding_size": 32,
            "true_hidden_size": 32,
            "intra_bottleneck_size": 32,
            "num_feedforward_networks": 2,
            "type_vocab_size": TYPE_VOCAB_SIZE,
        },
        True,
    ),
    "squeezebert": (
        "SqueezeBert",
        {**_BERT_LIKE, "embedding_size": HIDDEN, "type_vocab_size": TYPE_VOCAB_SIZE},
        True,
    ),
    "camembert": ("Camembert", dict(_ROBERTA_LIKE), False),
    "deberta-v2": (
        "DebertaV2",
        {
            **_BERT_LIKE,
            "type_vocab_size": TYPE_VOCAB_SIZE,
            "relative_attention": True,
            "position_buckets": 32,
            "max_relative_positions": -1,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
        },
        True,
    ),
}

# name -> (transformers class prefix, config kwargs); the image side is config["image_size"]
VISION_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": (
        "ViT",
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE,
        },
    ),
    "deit": (
        "DeiT",
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE,
        },
    ),
    "convnext": (
        "ConvNext",
        {"image_size": 64, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 2, 1]},
    ),
    "resnet": (
        "ResNet",
        {
            "image_size": 64,
            "embedding_size": 16,
            "hidden_sizes": [16, 32, 48, 64],
            "depths": [1, 1, 2, 1],
            "layer_type": "bottleneck",
        },
    ),
    "mobilenet-v2": (
        "MobileNetV2",
        {"image_size": 64, "depth_multiplier": 0.25, "finegrained_output": False},
    ),
    "swin": (
        "Swin",
        {
            "image_size": 32,
            "patch_size": 4,
            "embed_dim": 16,
            "depths": [2, 2],
            "num_heads": [2, 4],
            "window_size": 4,
            "mlp_ratio": 2.0,
        },
    ),
    "efficientnet": (
        "EfficientNet",
        {
            "image_size": 64,
            "width_coefficient": 0.25,
            "depth_coefficient": 0.25,
            "hidden_dim": 320,  # must equal round_filters(1280) for this width
        },
    ),
    "regnet": (
        "RegNet",
        {
            "image_size": 64,
            "embedding_size": 16,
            "hidden_sizes": [16, 32, 48, 64],
            "depths": [1, 1, 2, 1],
            "groups_width": 8,
            "layer_type": "y",
        },
    ),
    "beit": (
        "Beit",
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE,
            "use_relative_position_bias": True,
            "use_mean_pooling": True,
            "layer_scale_init_value": 0.1,
        },
    ),
}


@dataclass(frozen=True)
class Job:
    """One model of the corpus."""

    name: str
    tf: str  # "tf4" or "tf5"
    exporter: str  # "legacy" or "dynamo"
    opset: int
    arch: str
    head: str
    variant: str = ""  # "" or an external-data variant of the legacy model named by `base`
    base: str = ""


def job(tf: str, exporter: str, opset: int, arch: str, head: str) -> Job:
    name = f"{tf}-{exporter}-op{opset}-{arch}-{HEADS_SHORT[head]}"
    return Job(name, tf, exporter, opset, arch, head)


def plan() -> list[Job]:
    """The export matrix, in the order the workers run it."""
    jobs: list[Job] = []
    seq = "sequence-classification"
    img = "image-classification"
    # 1. transformers 5, legacy exporter, opset 17: every text arch x head, every vision arch
    jobs += [job("tf5", "legacy", 17, a, h) for a in TEXT_ARCHS for h in TEXT_HEADS]
    jobs += [job("tf5", "legacy", 17, a, img) for a in VISION_ARCHS]
    # 2. transformers 5, legacy exporter, opset 14: every text arch, sequence classification
    jobs += [job("tf5", "legacy", 14, a, seq) for a in TEXT_ARCHS]
    # 3. transformers 4, legacy exporter, opset 14
    jobs += [job("tf4", "legacy", 14, a, seq) for a in TEXT_ARCHS]
    jobs += [job("tf4", "legacy", 14, "bert", h) for h in TEXT_HEADS[1:]]
    jobs += [job("tf4", "legacy", 14, a, img) for a in ("vit", "resnet")]
    # 4. transformers 5, dynamo exporter, opset 20, external data
    for arch in ("bert", "distilbert", "roberta"):
        jobs += [job("tf5", "dynamo", 20, arch, h) for h in (seq, "question-answering")]
    jobs += [job("tf5", "dynamo", 20, a, img) for a in ("vit", "resnet")]
    # 5. external-data variants of the legacy opset 17 BERT sequence classifier
    base = job("tf5", "legacy", 17, "bert", seq)
    for variant in ("extdata-subdir", "extdata-pertensor"):
        jobs.append(
            Job(f"{base.name}-{variant}", "tf5", "legacy", 17, "bert", seq, variant, base.name)
        )
    return jobs


# --------------------------------------------------------------------------------------------
# worker: runs in a subprocess with one transformers version first on sys.path


def redraw_weights(model: Any, seed: int) -> None:
    """Redraw every floating-point parameter to order one, deterministically.

    Linear and convolution weights get N(0, 1/fan_in), normalisation weights 1 + N(0, 0.2^2),
    everything else (biases, embeddings, tokens, position tables, layer scales) N(0, 0.5^2).
    Batch-norm running statistics are then measured on random inputs so that activations stay
    of order one through the network.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for pname, p in module.named_parameters(recurse=False):
                if not p.is_floating_point():
                    continue
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                is_matrix = isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
                if pname == "weight" and is_matrix:
                    fan_in = p[0].numel()
                    p.copy_(noise / math.sqrt(fan_in))
                elif pname == "weight" and "norm" in type(module).__name__.lower():
                    p.copy_(1.0 + 0.2 * noise)
                else:
                    p.copy_(0.5 * noise)


def calibrate_batchnorm(model: Any, make_inputs: Any, seed: int) -> None:
    """Set batch-norm running statistics from a few random batches (other layers in eval)."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _ in range(4):
            model(**make_inputs(8, gen))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def text_inputs(batch: int, seq: int, with_types: bool, gen: Any) -> dict[str, Any]:
    import torch

    ids = torch.randint(5, VOCAB_SIZE, (batch, seq), generator=gen, dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[1, -2:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        types = torch.zeros(batch, seq, dtype=torch.int64)
        types[:, seq // 2 :] = 1
        inputs["token_type_ids"] = types
    return inputs


def image_inputs(batch: int, size: int, gen: Any) -> dict[str, Any]:
    import torch

    return {"pixel_values": torch.randn(batch, 3, size, size, generator=gen)}


def build_model(j: Job) -> tuple[Any, Any, dict[str, Any]]:
    """Model, a function (batch, generator, sequence) -> inputs, and manifest facts."""
    import torch
    import transformers

    seed = SEED + zlib.crc32((j.base or j.name).encode())  # a variant shares its base's weights
    torch.manual_seed(seed)
    if j.arch in TEXT_ARCHS:
        prefix, kwargs, with_types = TEXT_ARCHS[j.arch]
        facts = {"vocab_size": VOCAB_SIZE}
        if with_types:
            facts["type_vocab_size"] = kwargs["type_vocab_size"]

        def make(batch: int, gen: Any, seq: int = 7) -> dict[str, Any]:
            return text_inputs(batch, seq, with_types, gen)
    else:
        prefix, kwargs = VISION_ARCHS[j.arch]
        size = kwargs["image_size"]
        facts = {"image_size": size}

        def make(batch: int, gen: Any, seq: int = 0) -> dict[str, Any]:
            return image_inputs(batch, size, gen)

    kwargs = dict(kwargs)
    if j.head in NUM_LABELS:
        kwargs["num_labels"] = NUM_LABELS[j.head]
    config = getattr(transformers, prefix + "Config")(**kwargs)
    model = getattr(transformers, prefix + HEAD_CLASS[j.head])(config)
    model.eval()
    redraw_weights(model, seed)
    calibrate_batchnorm(model, make, seed)
    return model, make, facts


def output_names(j: Job) -> list[str]:
    return ["start_logits", "end_logits"] if j.head == "question-answering" else ["logits"]


def export_legacy(j: Job, model: Any, inputs: dict[str, Any], path: Path) -> None:
    import torch

    names = list(inputs)
    outputs = output_names(j)
    if j.arch in TEXT_ARCHS:
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        per_token = j.head != "sequence-classification"
        axes.update(
            {o: {0: "batch", 1: "sequence"} if per_token else {0: "batch"} for o in outputs}
        )
    else:
        axes = {n: {0: "batch"} for n in [*names, *outputs]}
    torch.onnx.export(
        model,
        (),
        str(path),
        kwargs=inputs,
        dynamo=False,
        opset_version=j.opset,
        input_names=names,
        output_names=outputs,
        dynamic_axes=axes,
    )


def export_dynamo(j: Job, model: Any, inputs: dict[str, Any], path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch")
    if j.arch in TEXT_ARCHS:
        sequence = torch.export.Dim("sequence", max=MAX_POSITIONS)
        shapes = {n: {0: batch, 1: sequence} for n in inputs}
    else:
        shapes = {n: {0: batch} for n in inputs}
    program = torch.onnx.export(
        model,
        (),
        kwargs=inputs,
        dynamo=True,
        opset_version=j.opset,
        output_names=output_names(j),
        dynamic_shapes=shapes,
    )
    # The default save inlines weights this small; keep them in model.onnx.data as for a
    # real model.
    program.save(str(path), external_data=True)


def make_variant(j: Job, out: Path) -> None:
    """Re-save the base legacy model with its weights in external data files."""
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(out / j.base / "model.onnx"))
    target = out / j.name / "model.onnx"
    if j.variant == "extdata-subdir":
        (target.parent / "weights").mkdir(parents=True)
        onnx.save_model(
            model,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="weights/bert.onnx_data",
            size_threshold=0,
        )
    elif j.variant == "extdata-pertensor":
        # What onnx.save_model(..., all_tensors_to_one_file=False) does, except that onnx names
        # a file after a random uuid when the tensor's name (e.g. "onnx::MatMul_123") is not a
        # safe file name; here every file is named after its tensor, deterministically.
        used: set[str] = set()
        for tensor in model.graph.initializer:
            if len(tensor.raw_data) < 1024:
                continue
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", tensor.name).lstrip(".") or "tensor"
            location, n = stem, 1
            while location in used:
                n += 1
                location = f"{stem}_{n}"
            used.add(location)
            set_external_data(tensor, location=location)
        onnx.save_model(model, str(target))
    else:
        raise ValueError(f"unknown variant {j.variant}")


def to_numpy(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v.numpy() for k, v in inputs.items()}


def flat_outputs(j: Job, result: Any) -> list[Any]:
    return [result[name].detach().numpy() for name in output_names(j)]


def check_with_ort(j: Job, model: Any, make: Any, path: Path) -> float:
    """Run the export with onnxruntime on the sample shapes; return the worst relative error."""
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(SEED)
    worst = 0.0
    shapes = TEXT_SHAPES if j.arch in TEXT_ARCHS else [(b, 0) for b in IMAGE_BATCHES]
    for batch, seq in shapes:
        inputs = make(batch, gen, seq) if seq else make(batch, gen)
        with torch.no_grad():
            expected = flat_outputs(j, model(**inputs))
        got = session.run(output_names(j), to_numpy(inputs))
        for name, want, have in zip(output_names(j), expected, got):
            if want.shape != have.shape:
                raise RuntimeError(f"{name}: ORT shape {have.shape}, torch {want.shape}")
            scale = max(float(np.abs(want).max()), 1e-6)
            err = float(np.abs(want - have).max()) / scale
            if not err <= RTOL:
                raise RuntimeError(
                    f"{name} at batch {batch}"
                    + (f", sequence {seq}" if seq else "")
                    + f": ORT differs from torch by {err:.2e} of max |output| {scale:.3g}"
                )
            worst = max(worst, err)
    return worst


def describe(path: Path) -> dict[str, Any]:
    """Facts read back from the saved ONNX file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
        shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in ttype.shape.dim]
        inputs.append({"name": value.name, "dtype": dtype, "shape": shape})
    opset = next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    return {
        "opset": opset,
        "external_data": any(uses_external_data(t) for t in graph.initializer),
        "inputs": inputs,
        "outputs": [o.name for o in graph.output],
    }


def last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in f"{type(exc).__name__}: {exc}".splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def run_job(j: Job, out: Path, tf_version: str) -> dict[str, Any]:
    import torch

    directory = out / j.name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    path = directory / "model.onnx"
    try:
        model, make, facts = build_model(j)
        if j.variant:
            make_variant(j, out)
        else:
            gen = torch.Generator().manual_seed(SEED)
            sample = make(2, gen)
            with tempfile.TemporaryDirectory() as tmp:
                tmp_path = Path(tmp) / "model.onnx"
                exporter = export_dynamo if j.exporter == "dynamo" else export_legacy
                exporter(j, model, sample, tmp_path)
                for produced in Path(tmp).iterdir():
                    shutil.move(str(produced), str(directory / produced.name))
        worst = check_with_ort(j, model, make, path)
    except Exception as exc:
        traceback.print_exc()
        shutil.rmtree(directory, ignore_errors=True)
        return {"name": j.name, "error": last_line(exc)}
    entry = {
        "name": j.name,
        "path": f"{j.name}/model.onnx",
        "architecture": j.arch,
        "head": j.head,
        "transformers": tf_version,
        "exporter": j.exporter,
        **describe(path),
        **facts,
        "data_files": sorted(
            str(p.relative_to(directory))
            for p in directory.rglob("*")
            if p.is_file() and p.name != "model.onnx"
        ),
        "max_relative_error": float(f"{worst:.3g}"),
    }
    if j.variant:
        entry["variant_of"] = j.base
    return entry


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(args.transformers_dir).resolve()))
    import onnx
    import onnxruntime
    import torch
    import transformers

    torch.set_num_threads(1)
    pattern = re.compile(args.only) if args.only else None
    jobs = [j for j in plan() if j.tf == args.tag and (not pattern or pattern.search(j.name))]
    out = Path(args.out)
    models, failed = [], []
    for j in jobs:
        print(f"=== {j.name}", flush=True)
        result = run_job(j, out, transformers.__version__)
        (failed if "error" in result else models).append(result)
        print(f"    {result.get('error', 'ok')}", flush=True)
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    Path(args.result).write_text(
        json.dumps({"versions": versions, "models": models, "failed": failed}, indent=1)
    )


# --------------------------------------------------------------------------------------------
# driver


def drive(args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.only:  # a full run starts from an empty corpus
        for child in out.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    results: dict[str, dict[str, Any]] = {}
    for tag, tf_dir in (("tf5", args.tf5_dir), ("tf4", args.tf4_dir)):
        with tempfile.TemporaryDirectory() as tmp:
            result_file = Path(tmp) / "result.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                "--tag",
                tag,
                "--transformers-dir",
                tf_dir,
                "--out",
                str(out),
                "--result",
                str(result_file),
            ]
            if args.only:
                cmd += ["--only", args.only]
            subprocess.run(cmd, env=env, check=True)
            results[tag] = json.loads(result_file.read_text())

    models = [m for r in results.values() for m in r["models"]]
    failed = [f for r in results.values() for f in r["failed"]]
    manifest_path = out / "manifest.json"
    if args.only and manifest_path.exists():  # keep the entries of the models not re-exported
        pattern = re.compile(args.only)
        previous = json.loads(manifest_path.read_text())
        models += [m for m in previous["models"] if not pattern.search(m["name"])]
        failed += [f for f in previous["failed"] if not pattern.search(f["name"])]
    order = {j.name: i for i, j in enumerate(plan())}
    models.sort(key=lambda m: order[m["name"]])
    failed.sort(key=lambda f: order[f["name"]])
    v5, v4 = results["tf5"]["versions"], results["tf4"]["versions"]
    manifest = {
        "generated_by": "tools/export_models.py",
        "versions": {
            "torch": v5["torch"],
            "transformers4": v4["transformers"],
            "transformers5": v5["transformers"],
            "onnx": v5["onnx"],
            "onnxruntime": v5["onnxruntime"],
        },
        "models": models,
        "failed": failed,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{len(models)} models exported, {len(failed)} failed; manifest in {out}")
    for f in failed:
        print(f"FAILED {f['name']}: {f['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf4-dir", default="/work/tf4", help="dir with transformers 4.x")
    parser.add_argument("--tf5-dir", default="/work/tf5", help="dir with transformers 5.x")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="corpus directory")
    parser.add_argument("--only", default="", help="regex: export only matching model names")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--transformers-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
