"""The exception classes: created by the compiled engine, re-exported by ``sparsepipe.errors``
with their documented bases, module, docstrings and pickling."""

from __future__ import annotations

import pickle

import pytest
import sparsepipe
from sparsepipe import _engine, errors

BASES = {
    "SparsepipeError": (Exception,),
    "ModelLoadError": (errors.SparsepipeError,),
    "InputError": (errors.SparsepipeError, ValueError),
    "ConfigError": (errors.SparsepipeError, ValueError),
    "EngineError": (errors.SparsepipeError, RuntimeError),
}


@pytest.mark.parametrize("name", sorted(BASES))
def test_class(name: str) -> None:
    cls = getattr(errors, name)
    assert cls is getattr(_engine, name) is getattr(sparsepipe, name)
    assert cls.__bases__ == BASES[name]
    assert cls.__module__ == "sparsepipe.errors" and cls.__qualname__ == name
    assert cls.__doc__ and cls.__doc__.endswith(".")
    err = cls("what was wrong; how to fix it")
    assert repr(err) == f"{name}('what was wrong; how to fix it')"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls and again.args == err.args


def test_the_engine_raises_the_same_classes(tmp_path) -> None:
    with pytest.raises(errors.ModelLoadError) as info:
        _engine.Engine(str(tmp_path / "missing.onnx"))
    assert type(info.value) is errors.ModelLoadError
    with pytest.raises(errors.ConfigError):
        _engine.check_options(num_threads=0)
