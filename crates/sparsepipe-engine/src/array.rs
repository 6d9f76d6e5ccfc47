//! The engine's own tensor types at its boundary: borrowed inputs, owned outputs.

use std::fmt;

use tract_core::prelude::{DatumType, Tensor};

use crate::error::{Error, Result};

/// Element types that cross the engine boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    Bool,
}

impl DType {
    /// numpy's name for the type (`float32`, `int64`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::Bool => "bool",
        }
    }

    pub(crate) fn from_datum(dt: DatumType) -> Option<DType> {
        Some(match dt {
            DatumType::F32 => DType::F32,
            DatumType::F64 => DType::F64,
            // ONNX int64 values that tract keeps symbolic until run time.
            DatumType::I64 | DatumType::TDim => DType::I64,
            DatumType::I32 => DType::I32,
            DatumType::I16 => DType::I16,
            DatumType::I8 => DType::I8,
            DatumType::U8 => DType::U8,
            DatumType::U16 => DType::U16,
            DatumType::Bool => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! typed_data {
    ($($variant:ident : $t:ty),* $(,)?) => {
        /// Borrowed, C-ordered element data of one input.
        #[derive(Debug, Clone, Copy)]
        pub enum DataRef<'a> { $($variant(&'a [$t])),* }

        /// Owned, C-ordered element data of one output.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Data { $($variant(Vec<$t>)),* }

        impl DataRef<'_> {
            /// The element type.
            pub fn dtype(&self) -> DType {
                match self { $(DataRef::$variant(_) => DType::$variant),* }
            }
            /// Number of elements.
            pub fn len(&self) -> usize {
                match self { $(DataRef::$variant(s) => s.len()),* }
            }
            /// Whether there are no elements.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
            pub(crate) fn to_tensor(self, shape: &[usize]) -> tract_core::prelude::TractResult<Tensor> {
                match self { $(DataRef::$variant(s) => Tensor::from_shape(shape, s)),* }
            }
        }

        impl Data {
            /// The element type.
            pub fn dtype(&self) -> DType {
                match self { $(Data::$variant(_) => DType::$variant),* }
            }
            pub(crate) fn from_tensor(t: &Tensor) -> Result<Data> {
                if t.datum_type() == DatumType::TDim {
                    let values = t.cast_to::<i64>().map_err(|e| Error::Engine(crate::error::chain(&e)))?;
                    return Data::from_tensor(&values);
                }
                let plain = t.try_as_plain_ram().map_err(|e| Error::Engine(crate::error::chain(&e)))?;
                let dt = DType::from_datum(t.datum_type()).ok_or_else(|| Error::Engine(format!(
                    "the model produced an output of type {:?}, which sparsepipe cannot return",
                    t.datum_type()
                )))?;
                let conv = |e: tract_core::prelude::TractError| Error::Engine(crate::error::chain(&e));
                Ok(match dt { $(DType::$variant => Data::$variant(plain.as_slice::<$t>().map_err(conv)?.to_vec())),* })
            }
        }
    };
}

typed_data!(F32: f32, F64: f64, I64: i64, I32: i32, I16: i16, I8: i8, U8: u8, U16: u16, Bool: bool);

/// A borrowed input tensor: C-ordered data and its shape.
#[derive(Debug, Clone, Copy)]
pub struct ArrayRef<'a> {
    pub shape: &'a [usize],
    pub data: DataRef<'a>,
}

/// An owned output tensor: C-ordered data and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// One dimension of a declared input or output shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (e.g. `batch`), or an expression of symbols (e.g. `2*sequence`).
    Symbol(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(d) => write!(f, "{d}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// Name, element type and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Option<DType>,
    pub shape: Vec<Dim>,
}
