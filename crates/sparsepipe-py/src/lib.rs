//! `sparsepipe._engine`: translates between Python/numpy and the engine crate. No logic here.

mod errors;
mod options;

use std::path::PathBuf;
use std::sync::OnceLock;

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use sparsepipe_engine::{Array, ArrayRef, Data, DataRef, Dim, Engine, Error, Isa, Kernel, RunsOn};

use errors::{input_error, to_pyerr};
use options::Given;

/// Inference allocates and frees the same large activation buffers on every call; mimalloc keeps
/// them mapped instead of returning them to the OS and faulting them back in.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

macro_rules! held {
    ($($variant:ident : $t:ty),* $(,)?) => {
        /// One input, borrowed from numpy when C-contiguous, else copied in C order.
        enum Held<'py> {
            $($variant(PyReadonlyArrayDyn<'py, $t>),)*
            Owned(Vec<usize>, Data),
        }

        impl<'py> Held<'py> {
            fn extract(py: Python<'py>, name: &str, obj: &Bound<'py, PyAny>) -> PyResult<Held<'py>> {
                let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
                    return Err(input_error(py, format!(
                        "input '{name}' must be a numpy array, got {}", obj.get_type().name()?
                    )));
                };
                $(
                    if let Ok(a) = untyped.cast::<PyArrayDyn<$t>>() {
                        let ro = a.try_readonly().map_err(|e| input_error(py, format!(
                            "input '{name}' cannot be read: {e}"
                        )))?;
                        if ro.is_c_contiguous() {
                            return Ok(Held::$variant(ro));
                        }
                        let shape = ro.shape().to_vec();
                        return Ok(Held::Owned(shape, Data::$variant(ro.as_array().iter().cloned().collect())));
                    }
                )*
                Err(input_error(py, format!(
                    "input '{name}' has dtype {}, which sparsepipe does not accept; use one of \
                     float32, float64, int64, int32, int16, int8, uint8, uint16, bool",
                    untyped.dtype()
                )))
            }

            fn as_ref(&self) -> ArrayRef<'_> {
                match self {
                    $(Held::$variant(a) => ArrayRef {
                        shape: a.shape(),
                        data: DataRef::$variant(a.as_slice().expect("checked C-contiguous")),
                    },)*
                    Held::Owned(shape, data) => ArrayRef {
                        shape,
                        data: match data { $(Data::$variant(v) => DataRef::$variant(v),)* },
                    },
                }
            }
        }

        fn to_numpy(py: Python<'_>, a: Array) -> PyResult<Py<PyAny>> {
            let shape = IxDyn(&a.shape);
            let err = |e: numpy::ndarray::ShapeError| to_pyerr(py, Error::Engine(e.to_string()));
            Ok(match a.data {
                $(Data::$variant(v) => ArrayD::from_shape_vec(shape, v).map_err(err)?.into_pyarray(py).into_any().unbind(),)*
            })
        }
    };
}

held!(F32: f32, F64: f64, I64: i64, I32: i32, I16: i16, I8: i8, U8: u8, U16: u16, Bool: bool);

fn dim_to_py(py: Python<'_>, d: &Dim) -> PyResult<Py<PyAny>> {
    Ok(match d {
        Dim::Fixed(v) => v.into_pyobject(py)?.into_any().unbind(),
        Dim::Symbol(s) => s.into_pyobject(py)?.into_any().unbind(),
    })
}

/// A loaded ONNX model (see `sparsepipe.Engine` for the documented wrapper).
#[pyclass(frozen, name = "Engine", module = "sparsepipe._engine")]
struct PyEngine {
    inner: Engine,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[allow(clippy::too_many_arguments)] // one keyword argument per engine option
    #[pyo3(
        signature = (model_path, *, batch_size=None, num_threads=None, sparsity_threshold=Given::DEFAULT, dense_backend=Given::DEFAULT, isa=None, fuse=Given::DEFAULT),
        text_signature = "(model_path, *, batch_size=None, num_threads=None, sparsity_threshold=0.5, dense_backend='auto', isa=None, fuse=True)"
    )]
    fn new(
        py: Python<'_>,
        model_path: PathBuf,
        batch_size: Option<Bound<'_, PyAny>>,
        num_threads: Option<Bound<'_, PyAny>>,
        sparsity_threshold: Given<'_>,
        dense_backend: Given<'_>,
        isa: Option<Bound<'_, PyAny>>,
        fuse: Given<'_>,
    ) -> PyResult<Self> {
        let values = options::Values::convert(batch_size, num_threads, sparsity_threshold, dense_backend, isa, fuse)?;
        let options = values.as_option_values().parse().map_err(|e| to_pyerr(py, e))?;
        let inner = py.detach(|| Engine::load(&model_path, options)).map_err(|e| to_pyerr(py, e))?;
        Ok(PyEngine { inner })
    }

    /// Runs the model on arrays given as a list in input order or a dict by input name; returns
    /// the outputs in output order.
    fn run(&self, py: Python<'_>, inputs: Bound<'_, PyAny>) -> PyResult<Vec<Py<PyAny>>> {
        let inputs = self.in_order(py, &inputs)?;
        let held = self.hold_inputs(py, &inputs)?;
        let refs: Vec<ArrayRef<'_>> = held.iter().map(Held::as_ref).collect();
        let outs = py.detach(|| self.inner.run(&refs)).map_err(|e| to_pyerr(py, e))?;
        outs.into_iter().map(|a| to_numpy(py, a)).collect()
    }

    /// Mean seconds per plan node over `iterations` runs: {name, op, seconds, output_elements}.
    fn profile<'py>(
        &self,
        py: Python<'py>,
        inputs: Bound<'py, PyAny>,
        iterations: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let iterations = options::int("iterations", &iterations)?;
        let iterations = sparsepipe_engine::options::count("iterations", iterations).map_err(|e| to_pyerr(py, e))?;
        let inputs = self.in_order(py, &inputs)?;
        let held = self.hold_inputs(py, &inputs)?;
        let refs: Vec<ArrayRef<'_>> = held.iter().map(Held::as_ref).collect();
        let times = py.detach(|| self.inner.profile(&refs, iterations)).map_err(|e| to_pyerr(py, e))?;
        let list = PyList::empty(py);
        for t in times {
            let d = PyDict::new(py);
            d.set_item("name", &t.name)?;
            d.set_item("op", &t.op)?;
            d.set_item("seconds", t.seconds)?;
            d.set_item("output_elements", t.output_elements)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Position of the input called `name`.
    fn input_index(&self, py: Python<'_>, name: &str) -> PyResult<usize> {
        self.inner.input_index(name).map_err(|e| to_pyerr(py, e))
    }

    #[getter]
    fn input_names(&self) -> Vec<String> {
        self.inner.inputs().iter().map(|i| i.name.clone()).collect()
    }

    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.inner.outputs().iter().map(|i| i.name.clone()).collect()
    }

    #[getter]
    fn input_shapes(&self, py: Python<'_>) -> PyResult<Vec<Vec<Py<PyAny>>>> {
        self.inner.inputs().iter().map(|i| i.shape.iter().map(|d| dim_to_py(py, d)).collect()).collect()
    }

    #[getter]
    fn output_shapes(&self, py: Python<'_>) -> PyResult<Vec<Vec<Py<PyAny>>>> {
        self.inner.outputs().iter().map(|i| i.shape.iter().map(|d| dim_to_py(py, d)).collect()).collect()
    }

    #[getter]
    fn input_dtypes(&self) -> Vec<Option<&'static str>> {
        self.inner.inputs().iter().map(|i| i.dtype.map(|d| d.name())).collect()
    }

    #[getter]
    fn output_dtypes(&self) -> Vec<Option<&'static str>> {
        self.inner.outputs().iter().map(|i| i.dtype.map(|d| d.name())).collect()
    }

    #[getter]
    fn num_threads(&self) -> usize {
        self.inner.num_threads()
    }

    #[getter]
    fn batch_size(&self) -> Option<usize> {
        self.inner.options().batch_size
    }

    #[getter]
    fn sparsity_threshold(&self) -> f64 {
        self.inner.options().sparsity_threshold
    }

    #[getter]
    fn isa(&self) -> &'static str {
        self.inner.isa().name()
    }

    #[getter]
    fn model_path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    #[getter]
    fn fuse(&self) -> bool {
        self.inner.options().fuse
    }

    /// The subgraphs that run as one fused op: (kind, node name) pairs.
    fn fused_ops(&self) -> Vec<(&'static str, String)> {
        self.inner.fused_ops().iter().map(|f| (f.kind, f.node.clone())).collect()
    }

    /// Candidates for a fused op left to the per-operator path: (kind, node, reason, related node).
    fn fusion_misses(&self) -> Vec<(&'static str, String, String, Option<String>)> {
        self.inner
            .fusion_misses()
            .iter()
            .map(|m| (m.kind, m.node.clone(), m.reason.clone(), m.related.clone()))
            .collect()
    }

    /// One dict per constant-weight matmul or groups-1 convolution.
    fn sparsity_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for l in self.inner.sparsity_report() {
            let d = PyDict::new(py);
            d.set_item("node", &l.node)?;
            d.set_item("pattern", &l.pattern)?;
            d.set_item("shape", &l.weight_shape)?;
            d.set_item("k", l.k)?;
            d.set_item("n", l.n)?;
            d.set_item("sparsity", l.sparsity)?;
            d.set_item(
                "kernel",
                match l.kernel {
                    Kernel::Sparse => "sparse",
                    Kernel::Dense => "dense",
                },
            )?;
            d.set_item(
                "isa",
                match l.isa {
                    RunsOn::Ours(isa) => isa.name(),
                    RunsOn::Tract => "tract",
                },
            )?;
            d.set_item("fused", &l.fused)?;
            d.set_item("plan_node", &l.plan_node)?;
            d.set_item("plan_output_channels", l.plan_output_channels)?;
            list.append(d)?;
        }
        Ok(list)
    }
}

/// Kernel instruction sets this CPU supports, slowest first.
#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    Isa::available().into_iter().map(Isa::name).collect()
}

/// Checks engine option values as `Engine` does, without loading a model: TypeError for a
/// wrong type, ConfigError for a bad value.
#[pyfunction]
#[pyo3(
    signature = (*, batch_size=None, num_threads=None, sparsity_threshold=Given::DEFAULT, dense_backend=Given::DEFAULT, isa=None, fuse=Given::DEFAULT),
    text_signature = "(*, batch_size=None, num_threads=None, sparsity_threshold=0.5, dense_backend='auto', isa=None, fuse=True)"
)]
fn check_options(
    py: Python<'_>,
    batch_size: Option<Bound<'_, PyAny>>,
    num_threads: Option<Bound<'_, PyAny>>,
    sparsity_threshold: Given<'_>,
    dense_backend: Given<'_>,
    isa: Option<Bound<'_, PyAny>>,
    fuse: Given<'_>,
) -> PyResult<()> {
    let values = options::Values::convert(batch_size, num_threads, sparsity_threshold, dense_backend, isa, fuse)?;
    values.as_option_values().parse().map_err(|e| to_pyerr(py, e))?;
    Ok(())
}

/// Threads an Engine uses when `num_threads` is None.
#[pyfunction]
fn default_num_threads(py: Python<'_>) -> PyResult<usize> {
    sparsepipe_engine::threads::resolve_num_threads(None).map_err(|e| to_pyerr(py, e))
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    static VERSION: OnceLock<&str> = OnceLock::new();
    m.add("__version__", *VERSION.get_or_init(|| env!("CARGO_PKG_VERSION")))?;
    m.add_class::<PyEngine>()?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    m.add_function(wrap_pyfunction!(default_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(check_options, m)?)?;
    errors::add_to(m)?;
    Ok(())
}

impl PyEngine {
    /// The inputs in input order: a list or tuple as given, a dict ordered by input name.
    fn in_order<'py>(&self, py: Python<'py>, inputs: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        if let Ok(dict) = inputs.cast::<PyDict>() {
            let named = dict.iter().map(|(k, v)| Ok((k.str()?.to_string(), v))).collect::<PyResult<Vec<_>>>()?;
            return self.inner.order_inputs(named).map_err(|e| to_pyerr(py, e));
        }
        if inputs.is_instance_of::<PyList>() || inputs.is_instance_of::<PyTuple>() {
            return inputs.extract();
        }
        let names: Vec<String> = self.inner.inputs().iter().map(|i| format!("'{}'", i.name)).collect();
        Err(input_error(
            py,
            format!(
                "inputs must be a list of arrays in input order or a dict by input name ({}), got {}",
                names.join(", "),
                inputs.get_type().name()?
            ),
        ))
    }

    /// Borrows (or converts) each Python input, named after the model input it feeds.
    fn hold_inputs<'py>(&self, py: Python<'py>, inputs: &[Bound<'py, PyAny>]) -> PyResult<Vec<Held<'py>>> {
        let infos = self.inner.inputs();
        inputs
            .iter()
            .enumerate()
            .map(|(i, obj)| {
                let name = infos.get(i).map_or_else(|| format!("#{i}"), |info| info.name.clone());
                Held::extract(py, &name, obj)
            })
            .collect()
    }
}
