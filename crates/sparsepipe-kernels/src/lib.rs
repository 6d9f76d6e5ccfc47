//! Sparse- and dense-weight matrix kernels for `Y = X·W (+ bias, clamp)` with a constant `W`.
//!
//! Weights are packed once ([`PackedLinear::sparse`] / [`PackedLinear::dense`]); each call lays
//! the activations out channels-first, runs SIMD micro-kernels (AVX-512F, AVX2+FMA or portable,
//! picked at run time) over tiles in parallel on the current rayon pool, and lays the result back.
//! [`attention`] computes masked softmax attention over strided operands the same way.
//! This crate knows nothing about graphs.

// Register-blocked kernels index several accumulator arrays with one loop variable.
#![allow(clippy::needless_range_loop)]

mod attention;
mod cache;
mod conv;
mod dense;
mod depthwise;
mod epilogue;
mod exec;
mod isa;
mod norm;
mod phases;
mod simd;
mod softmax;
mod sparse;
mod transpose;

pub use attention::{attention, reference_attention, AttnAxis, AttnLayout};
pub use cache::l1d_bytes;
pub use conv::{reference_conv, Conv2d};
pub use dense::{dense_panel, DenseMatrix};
pub use depthwise::{max_pool, reference_depthwise, reference_max_pool, Depthwise};
pub use epilogue::{Activation, Epilogue, Residual};
pub use isa::Isa;
pub use norm::{layer_norm, reference_layer_norm};
pub use softmax::softmax_axis;
pub use sparse::{default_kblock, SparseMatrix};

use std::fmt;

/// Why a kernel call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// A buffer length does not match the shapes given.
    Shape(String),
    /// The requested instruction set is not supported by this CPU.
    Unsupported(Isa),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Shape(s) => write!(f, "shape mismatch: {s}"),
            KernelError::Unsupported(isa) => write!(f, "this CPU does not support the {isa} kernels"),
        }
    }
}

impl std::error::Error for KernelError {}

/// A packed constant weight, sparse or dense.
#[derive(Debug, Clone)]
pub enum PackedLinear {
    /// Nonzeros only; fast when most weights are zero.
    Sparse(SparseMatrix),
    /// All weights, register-blocked.
    Dense(DenseMatrix),
}

impl PackedLinear {
    /// Packs `w(k, n)` keeping only nonzeros.
    pub fn sparse(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, epi: Epilogue) -> PackedLinear {
        PackedLinear::Sparse(SparseMatrix::from_fn(k, n, w, epi))
    }

    /// Packs `w(k, n)` keeping only nonzeros, `kblock` input channels per cache block (tuning).
    pub fn sparse_with_kblock(
        k: usize,
        n: usize,
        w: impl Fn(usize, usize) -> f32,
        epi: Epilogue,
        kblock: usize,
    ) -> PackedLinear {
        PackedLinear::Sparse(SparseMatrix::with_kblock(k, n, w, epi, kblock))
    }

    /// Packs `w(k, n)` densely.
    pub fn dense(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, epi: Epilogue) -> PackedLinear {
        PackedLinear::Dense(DenseMatrix::from_fn(k, n, w, epi))
    }

    /// The weights of `parts` side by side as one packed weight of the same kind whose output
    /// channels are theirs in order, or `None` when they differ in kind, `K`, block size or
    /// epilogue (biases aside).
    pub fn concat_n(parts: &[&PackedLinear]) -> Option<PackedLinear> {
        let sparse: Option<Vec<&SparseMatrix>> =
            parts.iter().map(|p| if let PackedLinear::Sparse(m) = p { Some(m) } else { None }).collect();
        if let Some(ms) = sparse {
            return SparseMatrix::concat_n(&ms).map(PackedLinear::Sparse);
        }
        let dense: Option<Vec<&DenseMatrix>> =
            parts.iter().map(|p| if let PackedLinear::Dense(m) = p { Some(m) } else { None }).collect();
        DenseMatrix::concat_n(&dense?).map(PackedLinear::Dense)
    }

    /// Input channels.
    pub fn k(&self) -> usize {
        match self {
            PackedLinear::Sparse(m) => m.k(),
            PackedLinear::Dense(m) => m.k(),
        }
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        match self {
            PackedLinear::Sparse(m) => m.n(),
            PackedLinear::Dense(m) => m.n(),
        }
    }

    /// `"sparse"` or `"dense"`.
    pub fn kind(&self) -> &'static str {
        match self {
            PackedLinear::Sparse(_) => "sparse",
            PackedLinear::Dense(_) => "dense",
        }
    }

    /// The activation applied on the way out.
    pub fn activation(&self) -> Activation {
        match self {
            PackedLinear::Sparse(m) => m.epilogue().act,
            PackedLinear::Dense(m) => m.epilogue().act,
        }
    }

    /// Bytes held by the packed weight.
    pub fn packed_bytes(&self) -> usize {
        match self {
            PackedLinear::Sparse(m) => m.packed_bytes(),
            PackedLinear::Dense(m) => m.packed_bytes(),
        }
    }

    /// Computes `y = epi(x·W)` where `x` is `[outer, K, inner]` and `y` is `[outer, N, inner]`
    /// (`inner == 1`: row-major `[M, K] -> [M, N]`; `inner > 1`: channels-first, e.g. NCHW
    /// with `inner = H*W`), in parallel on the current rayon pool.
    pub fn run(&self, isa: Isa, x: &[f32], outer: usize, inner: usize, y: &mut [f32]) -> Result<(), KernelError> {
        self.run_add(isa, x, outer, inner, None, y)
    }

    /// As [`PackedLinear::run`], then adds `add` (laid out like `y`, e.g. a residual) to every
    /// output while it is still in cache: `y = epi(x·W) + add`.
    pub fn run_add(
        &self,
        isa: Isa,
        x: &[f32],
        outer: usize,
        inner: usize,
        add: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<(), KernelError> {
        check_io(isa, x, [outer, self.k(), inner], add, y, [outer, self.n(), inner])?;
        if outer == 0 || inner == 0 {
            return Ok(());
        }
        if inner > 1 {
            // Channels-first: a 1x1 convolution of `outer` one-row images `inner` wide.
            let g = Conv2d::new((self.k(), 1, inner), (1, 1), (1, 1), (1, 1), (0, 0), (0, 0))?;
            let add = add.map(Residual::plain);
            match self {
                PackedLinear::Sparse(m) => conv::run_conv(m, isa, &g, x, outer, add, y),
                PackedLinear::Dense(m) => conv::run_conv(m, isa, &g, x, outer, add, y),
            }
            return Ok(());
        }
        match self {
            PackedLinear::Sparse(m) => m.run(isa, x, outer, add, y),
            PackedLinear::Dense(m) => m.run(isa, x, outer, add, y),
        }
        Ok(())
    }
}

impl PackedLinear {
    /// Computes the convolution `y = epi(conv(x, W))`, then `y = clamp(y + add)` when given
    /// (a residual connection and the ReLU after it), of `x: [batch, C, H, W]` into `y` (and
    /// `add.values`): `[batch, N, oh, ow]`, where this weight is the `[K, N]` matrix of `geom`
    /// (`K = C·kh·kw`), in parallel on the current rayon pool.
    pub fn run_conv(
        &self,
        isa: Isa,
        geom: &Conv2d,
        x: &[f32],
        batch: usize,
        add: Option<Residual<'_>>,
        y: &mut [f32],
    ) -> Result<(), KernelError> {
        if geom.k() != self.k() {
            return Err(KernelError::Shape(format!(
                "the convolution has {} taps per output (C·kh·kw) but the weight {} input channels",
                geom.k(),
                self.k()
            )));
        }
        let values = add.map(|r| r.values);
        check_io(isa, x, [batch, geom.c, geom.h * geom.w], values, y, [batch, self.n(), geom.cols()])?;
        match self {
            PackedLinear::Sparse(m) => conv::run_conv(m, isa, geom, x, batch, add, y),
            PackedLinear::Dense(m) => conv::run_conv(m, isa, geom, x, batch, add, y),
        }
        Ok(())
    }

    /// Computes `y = then(self(x)) (+ add)` for row-major `x: [rows, K]` and `y`, `add:
    /// [rows, then.N]` (e.g. a transformer's feed-forward block: up-projection with GELU, then
    /// down-projection plus the residual), in parallel on the current rayon pool. Each tile of
    /// rows goes through both weights while its intermediate stays in cache; the sums are those
    /// of `run` followed by `run_add`.
    pub fn run_chain(
        &self,
        then: &PackedLinear,
        isa: Isa,
        x: &[f32],
        rows: usize,
        add: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<(), KernelError> {
        if then.k() != self.n() {
            return Err(KernelError::Shape(format!(
                "the second weight takes {} input channels but the first gives {}",
                then.k(),
                self.n()
            )));
        }
        check_io(isa, x, [rows, self.k(), 1], add, y, [rows, then.n(), 1])?;
        use PackedLinear::{Dense as D, Sparse as S};
        match (self, then) {
            (S(a), S(b)) => exec::run_chain(a, b, isa, x, rows, add, y),
            (S(a), D(b)) => exec::run_chain(a, b, isa, x, rows, add, y),
            (D(a), S(b)) => exec::run_chain(a, b, isa, x, rows, add, y),
            (D(a), D(b)) => exec::run_chain(a, b, isa, x, rows, add, y),
        }
        Ok(())
    }
}

/// Checks that `isa` runs here and that `x`, `y` and `add` (laid out like `y`) hold exactly the
/// products of the `[outer, channels, inner]` dims given for them.
pub(crate) fn check_io(
    isa: Isa,
    x: &[f32],
    x_dims: [usize; 3],
    add: Option<&[f32]>,
    y: &[f32],
    y_dims: [usize; 3],
) -> Result<(), KernelError> {
    if !isa.is_supported() {
        return Err(KernelError::Unsupported(isa));
    }
    let check = |what: &str, len: usize, [o, c, i]: [usize; 3]| {
        if o.checked_mul(c).and_then(|v| v.checked_mul(i)) == Some(len) {
            return Ok(());
        }
        Err(KernelError::Shape(format!("{what} has {len} values, expected {o}x{c}x{i}")))
    };
    check("input", x.len(), x_dims)?;
    check("output", y.len(), y_dims)?;
    add.map_or(Ok(()), |a| check("addend", a.len(), y_dims))
}

/// Reference `y = epi(x·W)` for a row-major `[K, N]` weight, straight loops; used by tests.
pub fn reference_linear(
    w: &[f32],
    k: usize,
    n: usize,
    epi: &Epilogue,
    x: &[f32],
    outer: usize,
    inner: usize,
) -> Vec<f32> {
    let mut y = vec![0f32; outer * n * inner];
    for o in 0..outer {
        for i in 0..inner {
            for c in 0..n {
                let mut acc = epi.bias.as_ref().map_or(0.0, |b| b[c]) as f64;
                for r in 0..k {
                    acc += w[r * n + c] as f64 * x[(o * k + r) * inner + i] as f64;
                }
                y[(o * n + c) * inner + i] = epi.apply(acc as f32);
            }
        }
    }
    y
}
