//! What the kernels apply to each output on the way out: bias, activation and clamp
//! ([`Epilogue`]), and a residual added after them ([`Residual`]).

use crate::simd;

/// An activation applied to each output after its bias.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    #[default]
    None,
    /// The exact (erf) GELU.
    Gelu,
    /// `x · sigmoid(x)` (SiLU, swish: YOLOv5/v8 and EfficientNet-B convolutions).
    Silu,
    /// `x` where positive, else `alpha · x`, for `0 <= alpha <= 1`.
    LeakyRelu(f32),
}

impl Activation {
    /// The activation of one value.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Gelu => simd::gelu_scalar(v),
            Activation::Silu => v / (1.0 + (-v).exp()),
            Activation::LeakyRelu(alpha) => v.max(alpha * v),
        }
    }

    /// A short name for reports (`""` for none).
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::LeakyRelu(_) => "leaky_relu",
        }
    }
}

/// What is applied to each output on the way out: `clamp(act(acc + bias[n]), min, max)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue {
    /// Per-output-channel bias (`N` values), if any.
    pub bias: Option<Vec<f32>>,
    /// Lower clamp (`-inf` for none, `0` for ReLU).
    pub min: f32,
    /// Upper clamp (`+inf` for none, `6` for ReLU6).
    pub max: f32,
    /// Applied after the bias, before the clamp.
    pub act: Activation,
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue { bias: None, min: f32::NEG_INFINITY, max: f32::INFINITY, act: Activation::None }
    }
}

impl Epilogue {
    /// Bias only, no clamp.
    pub fn with_bias(bias: Vec<f32>) -> Epilogue {
        Epilogue { bias: Some(bias), ..Default::default() }
    }

    /// Whether a clamp is applied (NaNs propagate only when it is not).
    pub fn clamps(&self) -> bool {
        self.min > f32::NEG_INFINITY || self.max < f32::INFINITY
    }

    /// Applies the activation and clamp to one value (the bias is added by the kernels).
    #[inline]
    pub fn apply(&self, v: f32) -> f32 {
        let v = self.act.apply(v);
        if self.clamps() {
            v.max(self.min).min(self.max)
        } else {
            v
        }
    }

    pub(crate) fn bias_or_zeros(&self, n: usize) -> Vec<f32> {
        match &self.bias {
            Some(b) => {
                assert_eq!(b.len(), n, "bias length must equal N");
                b.clone()
            }
            None => vec![0.0; n],
        }
    }
}

/// A tensor added to a convolution's output after its epilogue, then clamped to `min..=max`
/// (a residual connection, and the ReLU after it).
#[derive(Debug, Clone, Copy)]
pub struct Residual<'a> {
    /// Laid out like the output.
    pub values: &'a [f32],
    pub min: f32,
    pub max: f32,
}

impl<'a> Residual<'a> {
    /// `values` added with no clamp after.
    pub fn plain(values: &'a [f32]) -> Residual<'a> {
        Residual { values, min: f32::NEG_INFINITY, max: f32::INFINITY }
    }

    /// Whether a clamp follows the addition.
    pub fn clamps(&self) -> bool {
        self.min > f32::NEG_INFINITY || self.max < f32::INFINITY
    }
}
