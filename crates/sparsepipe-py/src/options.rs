//! Python option values converted to the engine's types: a wrong Python type is a TypeError
//! naming the option; the values themselves are checked by the engine (`OptionValues::parse`).

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyBool;
use sparsepipe_engine::{DenseBackend, Isa, OptionValues};

/// An argument whose default is not `None`: the object as given (even `None`), or `DEFAULT`
/// when the caller left it out.
#[derive(Debug)]
pub(crate) struct Given<'py>(Option<Bound<'py, PyAny>>);

impl Given<'_> {
    /// The argument was left out.
    pub const DEFAULT: Self = Given(None);
}

impl<'a, 'py> FromPyObject<'a, 'py> for Given<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Given(Some(obj.to_owned())))
    }
}

/// The option values of `Engine(...)` / `check_options(...)` in Rust types.
#[derive(Debug)]
pub(crate) struct Values {
    batch_size: Option<i64>,
    num_threads: Option<i64>,
    sparsity_threshold: f64,
    dense_backend: String,
    isa: Option<String>,
    fuse: bool,
}

impl Values {
    /// Converts each argument, applying the defaults of the ones left out.
    pub fn convert(
        batch_size: Option<Bound<'_, PyAny>>,
        num_threads: Option<Bound<'_, PyAny>>,
        sparsity_threshold: Given<'_>,
        dense_backend: Given<'_>,
        isa: Option<Bound<'_, PyAny>>,
        fuse: Given<'_>,
    ) -> PyResult<Values> {
        let backends: Vec<&str> = DenseBackend::ALL.into_iter().map(DenseBackend::name).collect();
        let isas: Vec<&str> = Isa::ALL.into_iter().map(Isa::name).collect();
        Ok(Values {
            batch_size: batch_size.map(|v| int_or_none("batch_size", &v)).transpose()?,
            num_threads: num_threads.map(|v| int_or_none("num_threads", &v)).transpose()?,
            sparsity_threshold: match sparsity_threshold.0 {
                None => 0.5,
                Some(v) => number("sparsity_threshold", &v)?,
            },
            dense_backend: match dense_backend.0 {
                None => DenseBackend::Auto.name().to_string(),
                Some(v) => string("dense_backend", &v, &backends)?,
            },
            isa: isa.map(|v| string("isa", &v, &isas)).transpose()?,
            fuse: match fuse.0 {
                None => true,
                Some(v) => flag("fuse", &v)?,
            },
        })
    }

    /// The values as the engine parses them.
    pub fn as_option_values(&self) -> OptionValues<'_> {
        OptionValues {
            batch_size: self.batch_size,
            num_threads: self.num_threads,
            sparsity_threshold: self.sparsity_threshold,
            dense_backend: &self.dense_backend,
            isa: self.isa.as_deref(),
            fuse: self.fuse,
        }
    }
}

/// `type(obj).__name__ repr(obj)`, for messages.
fn described(obj: &Bound<'_, PyAny>) -> String {
    let kind = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".into());
    let repr = obj.repr().map(|r| r.to_string()).unwrap_or_default();
    format!("{kind} {repr}")
}

/// Python's and numpy's booleans, which are ints (or convert to numbers) but mean a flag.
fn is_bool(obj: &Bound<'_, PyAny>) -> bool {
    if obj.is_instance_of::<PyBool>() {
        return true;
    }
    let kind = obj.get_type();
    kind.module().is_ok_and(|m| m == "numpy") && kind.name().is_ok_and(|n| n == "bool" || n == "bool_")
}

/// `obj` as an integer (Python or numpy int, not a bool); TypeError naming `option` otherwise.
pub(crate) fn int(option: &str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int_as(option, obj, "an int")
}

fn int_or_none(option: &str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int_as(option, obj, "an int or None")
}

fn int_as(option: &str, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    let wrong = || PyTypeError::new_err(format!("{option} must be {what}, got {}", described(obj)));
    if is_bool(obj) {
        return Err(wrong());
    }
    obj.extract::<i64>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            PyOverflowError::new_err(format!("{option}={} does not fit in a 64-bit integer", described(obj)))
        } else {
            wrong()
        }
    })
}

/// `obj` as a float (any Python or numpy number but a bool); TypeError naming `option` otherwise.
fn number(option: &str, obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    let wrong = || PyTypeError::new_err(format!("{option} must be a number between 0 and 1, got {}", described(obj)));
    if is_bool(obj) {
        return Err(wrong());
    }
    obj.extract::<f64>().map_err(|_| wrong())
}

/// `obj` as a string; TypeError naming `option` and the names it takes otherwise.
fn string(option: &str, obj: &Bound<'_, PyAny>, names: &[&str]) -> PyResult<String> {
    obj.extract::<String>().map_err(|_| {
        let names: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let kind = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("{option} must be a str, one of {}, got {kind}", names.join(", ")))
    })
}

/// `obj` as a bool (Python's or numpy's); TypeError naming `option` otherwise.
fn flag(option: &str, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if !is_bool(obj) {
        return Err(PyTypeError::new_err(format!("{option} must be True or False, got {}", described(obj))));
    }
    obj.extract::<bool>().or_else(|_| obj.is_truthy())
}
