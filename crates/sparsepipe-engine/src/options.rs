//! Engine options and the one place their values are checked.

use std::str::FromStr;

use sparsepipe_kernels::Isa;

use crate::error::{Error, Result};
use crate::passes::weight_matmul::DenseBackend;

/// The largest `batch_size` accepted: larger batches gain nothing on a CPU, and the buffers
/// planned for them could exhaust memory.
pub const MAX_BATCH_SIZE: usize = 4096;
/// The largest `num_threads` accepted: far above any core count, below where spawning the pool
/// would take minutes.
pub const MAX_THREADS: usize = 1024;

/// Options fixed when a model is loaded.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// `None` accepts any batch size; `Some(b)` requires batch `b` on every call.
    pub batch_size: Option<usize>,
    /// `None`: `$SPARSEPIPE_NUM_THREADS`, else every core.
    pub num_threads: Option<usize>,
    /// Weights with at least this fraction of zeros run on the sparse kernel (above 1: never).
    pub sparsity_threshold: f64,
    /// Who runs weights below the threshold.
    pub dense_backend: DenseBackend,
    /// Kernel instruction set; `None` picks the best this CPU has.
    pub isa: Option<Isa>,
    /// Replace recognised subgraphs (scaled dot-product attention, layer normalization) by
    /// fused ops.
    pub fuse: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            batch_size: None,
            num_threads: None,
            sparsity_threshold: 0.5,
            dense_backend: DenseBackend::Auto,
            isa: None,
            fuse: true,
        }
    }
}

impl EngineOptions {
    /// Checks every value; `Error::Config` naming the first bad option and what it accepts.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == Some(0) {
            return Err(below_one("batch_size", 0));
        }
        if self.num_threads == Some(0) {
            return Err(below_one("num_threads", 0));
        }
        if let Some(b) = self.batch_size.filter(|&b| b > MAX_BATCH_SIZE) {
            return Err(Error::Config(format!(
                "batch_size must be at most {MAX_BATCH_SIZE}, got {b}: larger batches gain nothing on a CPU \
                 and their buffers could exhaust memory; split the inputs into several calls"
            )));
        }
        if let Some(t) = self.num_threads.filter(|&t| t > MAX_THREADS) {
            return Err(Error::Config(format!(
                "num_threads must be at most {MAX_THREADS}, got {t} (this machine has {} cores); \
                 or None to use every core",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            )));
        }
        let t = self.sparsity_threshold;
        if t.is_nan() || t < 0.0 {
            return Err(Error::Config(format!(
                "sparsity_threshold must be between 0 and 1 (above 1 disables the sparse kernels), got {t}"
            )));
        }
        if let Some(isa) = self.isa {
            if !isa.is_supported() {
                return Err(Error::Config(format!(
                    "this CPU does not support the {isa} kernels; use isa=None (the best it has) or one of {}",
                    quoted(Isa::available().into_iter().map(Isa::name))
                )));
            }
        }
        Ok(())
    }

    /// The kernel ISA to use: the requested one, else the best this CPU has.
    pub fn resolved_isa(&self) -> Isa {
        self.isa.unwrap_or_else(Isa::best)
    }
}

/// Engine options as a caller outside Rust gives them: counts may be negative, names unparsed.
#[derive(Debug, Clone)]
pub struct OptionValues<'a> {
    /// See [`EngineOptions::batch_size`].
    pub batch_size: Option<i64>,
    /// See [`EngineOptions::num_threads`].
    pub num_threads: Option<i64>,
    /// See [`EngineOptions::sparsity_threshold`].
    pub sparsity_threshold: f64,
    /// A [`DenseBackend`] name: `auto`, `tract` or `sparsepipe`.
    pub dense_backend: &'a str,
    /// An [`Isa`] name (`avx512`, `avx2`, `portable`), or `None` for the best this CPU has.
    pub isa: Option<&'a str>,
    /// See [`EngineOptions::fuse`].
    pub fuse: bool,
}

impl OptionValues<'_> {
    /// Parses and validates the values; `Error::Config` naming the first bad option otherwise.
    pub fn parse(&self) -> Result<EngineOptions> {
        let options = EngineOptions {
            batch_size: self.batch_size.map(|v| count("batch_size", v)).transpose()?,
            num_threads: self.num_threads.map(|v| count("num_threads", v)).transpose()?,
            sparsity_threshold: self.sparsity_threshold,
            dense_backend: self.dense_backend.parse()?,
            isa: self.isa.map(parse_isa).transpose()?,
            fuse: self.fuse,
        };
        options.validate()?;
        Ok(options)
    }
}

/// `value` of the count `option` (a batch size, a thread count, iterations) as a `usize`;
/// `Error::Config` naming the option unless it is at least 1.
pub fn count(option: &str, value: i64) -> Result<usize> {
    if value < 1 {
        return Err(below_one(option, value));
    }
    usize::try_from(value).map_err(|_| Error::Config(format!("{option}={value} is too large for this machine")))
}

/// The error for a count below 1, with what `None` means where the option takes it.
pub(crate) fn below_one(option: &str, value: i64) -> Error {
    let none = match option {
        "batch_size" => ", or None for any batch size",
        "num_threads" => ", or None to use every core",
        _ => "",
    };
    Error::Config(format!("{option} must be at least 1{none}, got {value}"))
}

/// The [`Isa`] called `name` (`avx512`, `avx2` or `portable`); `Error::Config` otherwise.
pub fn parse_isa(name: &str) -> Result<Isa> {
    Isa::ALL.into_iter().find(|i| i.name() == name).ok_or_else(|| {
        Error::Config(format!("isa must be one of {}, got '{name}'", quoted(Isa::ALL.into_iter().map(Isa::name))))
    })
}

impl DenseBackend {
    /// Every backend, in the order error messages list them.
    pub const ALL: [DenseBackend; 3] = [DenseBackend::Auto, DenseBackend::Tract, DenseBackend::Sparsepipe];

    /// The name [`FromStr`] accepts: `auto`, `tract` or `sparsepipe`.
    pub fn name(self) -> &'static str {
        match self {
            DenseBackend::Auto => "auto",
            DenseBackend::Tract => "tract",
            DenseBackend::Sparsepipe => "sparsepipe",
        }
    }
}

impl FromStr for DenseBackend {
    type Err = Error;

    fn from_str(name: &str) -> Result<DenseBackend> {
        DenseBackend::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
            Error::Config(format!(
                "dense_backend must be one of {}, got '{name}'",
                quoted(DenseBackend::ALL.into_iter().map(DenseBackend::name))
            ))
        })
    }
}

/// `'a', 'b', 'c'`.
fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> OptionValues<'static> {
        OptionValues {
            batch_size: None,
            num_threads: None,
            sparsity_threshold: 0.5,
            dense_backend: "auto",
            isa: None,
            fuse: true,
        }
    }

    fn config_error(r: Result<EngineOptions>) -> String {
        match r {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        EngineOptions::default().validate().unwrap();
        let parsed = values().parse().unwrap();
        assert_eq!(parsed.dense_backend, DenseBackend::Auto);
        assert_eq!((parsed.batch_size, parsed.num_threads, parsed.isa), (None, None, None));
    }

    #[test]
    fn counts_must_be_at_least_one() {
        for (option, v) in [("batch_size", 0), ("batch_size", -1), ("num_threads", 0), ("num_threads", -3)] {
            let mut raw = values();
            if option == "batch_size" {
                raw.batch_size = Some(v);
            } else {
                raw.num_threads = Some(v);
            }
            let msg = config_error(raw.parse());
            assert!(msg.contains(option) && msg.contains("at least 1") && msg.contains(&v.to_string()), "{msg}");
        }
        let zero = EngineOptions { batch_size: Some(0), ..Default::default() };
        assert!(matches!(zero.validate(), Err(Error::Config(m)) if m.contains("batch_size")));
        let zero = EngineOptions { num_threads: Some(0), ..Default::default() };
        assert!(matches!(zero.validate(), Err(Error::Config(m)) if m.contains("num_threads")));
        assert_eq!(count("iterations", 3).unwrap(), 3);
        assert!(matches!(count("iterations", 0), Err(Error::Config(m)) if m == "iterations must be at least 1, got 0"));
    }

    #[test]
    fn threshold_must_be_a_non_negative_number() {
        for (t, shown) in [(-1.0, "-1"), (-0.01, "-0.01"), (f64::NAN, "NaN")] {
            let msg = config_error(OptionValues { sparsity_threshold: t, ..values() }.parse());
            assert!(msg.contains("sparsity_threshold") && msg.contains(shown), "{msg}");
        }
        for t in [0.0, 1.0, 2.0] {
            EngineOptions { sparsity_threshold: t, ..Default::default() }.validate().unwrap();
        }
    }

    #[test]
    fn names_parse_exactly() {
        for b in DenseBackend::ALL {
            assert_eq!(b.name().parse::<DenseBackend>().unwrap(), b);
        }
        for bad in ["cuda", "", "Auto"] {
            let msg = config_error(OptionValues { dense_backend: bad, ..values() }.parse());
            assert!(msg.contains("dense_backend") && msg.contains("'auto', 'tract', 'sparsepipe'"), "{msg}");
            assert!(msg.contains(&format!("'{bad}'")), "{msg}");
        }
        for isa in Isa::ALL {
            assert_eq!(parse_isa(isa.name()).unwrap(), isa);
        }
        for bad in ["neon", "sse4", "AVX2", "generic"] {
            let msg = config_error(OptionValues { isa: Some(bad), ..values() }.parse());
            assert!(msg.contains("isa") && msg.contains(bad) && msg.contains("'portable'"), "{msg}");
        }
    }

    #[test]
    fn an_isa_the_cpu_lacks_is_refused() {
        for isa in Isa::ALL {
            let r = EngineOptions { isa: Some(isa), ..Default::default() }.validate();
            assert_eq!(r.is_ok(), isa.is_supported(), "{isa}: {r:?}");
        }
    }
}
