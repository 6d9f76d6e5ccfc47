"""The image-classification pipeline."""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from ...errors import ConfigError, ModelLoadError
from ...pipeline import BatchFields, EngineInputs, Pipeline
from .._examples import example_images
from .._images import load_images
from .._vision import class_names_from, image_size_from_shapes, image_size_option
from .processing import ImagePreprocessing
from .schemas import (
    ImageClassificationInput,
    ImageClassificationOptions,
    ImageClassificationOutput,
)

__all__ = ["ImageClassificationPipeline"]


@Pipeline.register("image-classification", default_model_path="zoo:efficientnet-lite0-imagenet")
class ImageClassificationPipeline(Pipeline):
    """Top-k labels per image; preprocessing from the model's ``preprocessor_config.json``.

    Without that file: ImageNet convention (shortest edge 256, center crop to the model's input
    size, ImageNet mean/std). Labels from config.json ``id2label`` or the ``class_names`` option.
    """

    input_schema = ImageClassificationInput
    output_schema = ImageClassificationOutput
    fixed_engine_batch = True
    options_schema = ImageClassificationOptions
    batch_fields = BatchFields(("images",), ("labels", "scores"), unwrap_single=True)
    image_field = "images"

    def __init__(
        self,
        *,
        class_names: Any = None,
        image_size: Optional[Union[int, tuple[int, int]]] = None,
        **kwargs: Any,
    ) -> None:
        self._class_names_option = class_names
        self._image_size_option = image_size
        wanted = None if image_size is None else image_size_option(image_size)
        super().__init__(**kwargs)
        self.class_names = class_names_from(self.model.json("config.json"), class_names)
        names = self.engine.input_names
        shape = self.engine.input_shapes[0]
        if len(names) != 1 or len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelLoadError(
                f"{self.onnx_file_path}: an image-classification model takes one NCHW RGB input "
                f"[batch, 3, H, W]; this one takes {names} with shape {shape}"
            )
        fixed = (shape[2], shape[3]) if all(isinstance(d, int) for d in shape[2:]) else None
        if wanted is not None:
            if fixed is not None and wanted != fixed:
                raise ConfigError(
                    f"the model's input size is fixed at {fixed}; leave image_size unset or give "
                    "that size"
                )
            fixed = wanted
        config = self.model.json("preprocessor_config.json")
        self.preprocessing = ImagePreprocessing.from_config(config or None, fixed)
        out = self.preprocessing.output_size()
        if fixed is not None and out is not None and tuple(out) != tuple(fixed):
            raise ConfigError(
                f"preprocessor_config.json makes {out[0]}x{out[1]} images but the model takes "
                f"{fixed[0]}x{fixed[1]}; fix crop_size/size in the config"
            )
        self._dtype = np.dtype(self.engine.input_dtypes[0] or "float32")

    def _config_kwargs(self) -> dict[str, Any]:
        out = super()._config_kwargs()
        names = self._class_names_option
        if names is not None:
            out["class_names"] = names if isinstance(names, (list, dict)) else str(names)
        if self._image_size_option is not None:
            out["image_size"] = list(image_size_option(self._image_size_option))
        return out

    @classmethod
    def input_shapes_options(cls, shapes: list[list[int]]) -> dict[str, Any]:
        """``image_size`` (height, width) from an NCHW ``[batch, 3, H, W]`` shape."""
        return image_size_from_shapes(cls.task, shapes)

    def example_inputs(self, batch_size: int, tokens: Optional[int] = None) -> tuple[dict, str]:
        """The sample images beside a source checkout in turn, else a synthetic image."""
        images, described = example_images(batch_size)
        return {"images": images}, described

    def process_inputs(self, inputs: ImageClassificationInput) -> EngineInputs:
        """Preprocessed ``[N, 3, H, W]`` pixels."""
        images = load_images(inputs.images)
        single = not isinstance(inputs.images, (list, tuple))
        if not images:
            return EngineInputs([], {"count": 0, "single": single})
        pixels = self.preprocessing.preprocess_batch(images).astype(self._dtype, copy=False)
        return EngineInputs([pixels], {"count": len(images), "single": single})

    def engine_forward(self, engine_inputs: Any) -> list[np.ndarray]:
        """The base batching, skipped for an empty batch."""
        if not engine_inputs:
            return []
        return super().engine_forward(engine_inputs)

    def _scores(self, logits: np.ndarray) -> np.ndarray:
        fn = self.options.function_to_apply
        config = self.model.json("config.json")
        if fn in (None, "default") and (
            config.get("problem_type") == "multi_label_classification" or logits.shape[-1] == 1
        ):
            fn = "sigmoid"
        if fn in (None, "default"):
            is_prob = (
                np.all(logits >= 0) and np.all(logits <= 1) and abs(float(logits.sum()) - 1) < 1e-3
            )
            fn = "none" if is_prob else "softmax"
        if fn == "softmax":
            e = np.exp(logits - logits.max())
            return e / e.sum()
        if fn == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        return logits

    def process_engine_outputs(
        self,
        engine_outputs: list[np.ndarray],
        *,
        count: int = 0,
        single: bool = False,
        **kwargs: Any,
    ) -> ImageClassificationOutput:
        """The ``top_k`` labels and scores, best first: of the image itself when one image (not
        a list) was given, else one list per image (also at ``top_k=1``), as in Hugging Face and
        DeepSparse."""
        if count == 0:
            return ImageClassificationOutput(labels=[], scores=[])
        top_k = self.options.top_k
        logits = np.asarray(engine_outputs[0], dtype=np.float32).reshape(count, -1)
        labels: list[Any] = []
        scores: list[Any] = []
        for row in logits:
            probs = self._scores(row)
            order = np.argsort(-probs, kind="stable")[:top_k]
            labels.append([self.class_names.get(int(i), f"LABEL_{int(i)}") for i in order])
            scores.append([float(probs[i]) for i in order])
        if single:
            return ImageClassificationOutput(labels=labels[0], scores=scores[0])
        return ImageClassificationOutput(labels=labels, scores=scores)
