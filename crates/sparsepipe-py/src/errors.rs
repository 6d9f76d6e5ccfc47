//! The exception classes `sparsepipe.errors` re-exports, and engine errors mapped onto them with
//! Python-flavoured advice.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use sparsepipe_engine::Error;

/// The module the classes say they belong to, so reprs and pickling name `sparsepipe.errors`.
const MODULE: &str = "sparsepipe.errors";

/// The five exception classes, created once per interpreter.
pub(crate) struct Classes {
    pub base: Py<PyType>,
    pub model_load: Py<PyType>,
    pub input: Py<PyType>,
    pub config: Py<PyType>,
    pub engine: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// The classes, created on first use (`InputError` and `ConfigError` are also `ValueError`s,
/// `EngineError` a `RuntimeError`, which `create_exception!`'s single base cannot express).
pub(crate) fn classes(py: Python<'_>) -> PyResult<&'static Classes> {
    CLASSES.get_or_try_init(py, || {
        let base = new_class(
            py,
            "SparsepipeError",
            &[py.get_type::<pyo3::exceptions::PyException>()],
            "Base class of every error sparsepipe raises on purpose.",
        )?;
        let sub = |name: &str, extra: Option<Bound<'_, PyType>>, doc: &str| {
            let mut bases = vec![base.bind(py).clone()];
            bases.extend(extra);
            new_class(py, name, &bases, doc)
        };
        let value_error = || Some(py.get_type::<pyo3::exceptions::PyValueError>());
        Ok(Classes {
            model_load: sub(
                "ModelLoadError",
                None,
                "The model file is missing, unreadable, not ONNX, truncated or uses unsupported operators.",
            )?,
            input: sub(
                "InputError",
                value_error(),
                "The inputs of a call do not match the model (count, name, dtype, rank or shape).",
            )?,
            config: sub(
                "ConfigError",
                value_error(),
                "An option given to sparsepipe is invalid (e.g. ``num_threads=0``).",
            )?,
            engine: sub(
                "EngineError",
                Some(py.get_type::<pyo3::exceptions::PyRuntimeError>()),
                "Running the model failed after its inputs were accepted.",
            )?,
            base,
        })
    })
}

/// `type(name, bases, {"__module__": MODULE, "__doc__": doc})`.
fn new_class(py: Python<'_>, name: &str, bases: &[Bound<'_, PyType>], doc: &str) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", MODULE)?;
    namespace.set_item("__doc__", doc)?;
    let class = py.get_type::<PyType>().call1((name, PyTuple::new(py, bases)?, namespace))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

/// The `sparsepipe.errors` exception for an engine error, with Python advice where the engine
/// reports the facts only.
pub(crate) fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let classes = match classes(py) {
        Ok(c) => c,
        Err(err) => return err,
    };
    let (class, msg) = match e {
        Error::ModelLoad(m) => (&classes.model_load, m),
        Error::Input(m) => (&classes.input, m),
        Error::InputDtype { input, want, given } => (
            &classes.input,
            format!("input '{input}' must be {want}, got {given}: convert it with .astype(numpy.{want})"),
        ),
        Error::InputBatch { input, batch_size, got } => (
            &classes.input,
            format!(
                "this engine was created with batch_size={batch_size}, but input '{input}' has batch {got}; \
                 pass {batch_size} item(s) per call or create the Engine with batch_size=None"
            ),
        ),
        Error::Config(m) => (&classes.config, m),
        Error::Engine(m) => (&classes.engine, m),
    };
    PyErr::from_type(class.bind(py).clone(), msg)
}

/// An `InputError` with `msg`.
pub(crate) fn input_error(py: Python<'_>, msg: String) -> PyErr {
    to_pyerr(py, Error::Input(msg))
}

/// Adds the classes to the extension module under their names.
pub(crate) fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let c = classes(m.py())?;
    for class in [&c.base, &c.model_load, &c.input, &c.config, &c.engine] {
        let class = class.bind(m.py());
        m.add(class.name()?, class)?;
    }
    Ok(())
}
