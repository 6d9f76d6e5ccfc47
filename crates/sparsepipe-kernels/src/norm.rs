//! Layer normalization over the last axis, rows in parallel on the current rayon pool.

use rayon::prelude::*;

use crate::isa::Isa;
use crate::simd::{Portable, Simd, LANES};
use crate::KernelError;

/// Below this many values a call runs on the calling thread alone.
const PAR_MIN: usize = 1 << 14;

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` over each row of `n` values of `x`
/// (`mean`, `var`: of the row; `gamma`, `beta`: `n` values each, or absent for 1 and 0).
pub fn layer_norm(
    isa: Isa,
    x: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
) -> Result<(), KernelError> {
    if !isa.is_supported() {
        return Err(KernelError::Unsupported(isa));
    }
    if x.len() != y.len() || (n == 0 && !x.is_empty()) || (n > 0 && x.len() / n * n != x.len()) {
        return Err(KernelError::Shape(format!("layer norm of {} values in rows of {n} into {}", x.len(), y.len())));
    }
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        if p.is_some_and(|p| p.len() != n) {
            return Err(KernelError::Shape(format!(
                "layer norm {name} has {} values, rows have {n}",
                p.unwrap().len()
            )));
        }
    }
    if x.is_empty() {
        return Ok(());
    }
    let rows_per_job = (PAR_MIN / n).max(1);
    let body = |(xs, ys): (&[f32], &mut [f32])| {
        for (xr, yr) in xs.chunks_exact(n).zip(ys.chunks_exact_mut(n)) {
            // SAFETY: `xr` and `yr` hold `n` floats, gamma/beta `n` when present (checked above);
            // the ISA is supported (checked above).
            unsafe { row_dispatch(isa, xr, gamma, beta, eps, yr) }
        }
    };
    if rayon::current_num_threads() > 1 && x.len() >= 2 * PAR_MIN {
        x.par_chunks(rows_per_job * n).zip(y.par_chunks_mut(rows_per_job * n)).for_each(body);
    } else {
        body((x, y));
    }
    Ok(())
}

unsafe fn row_dispatch(isa: Isa, x: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, y: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded contract.
        Isa::Avx512 => unsafe { row_avx512(x, gamma, beta, eps, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded contract.
        Isa::Avx2 => unsafe { row_avx2(x, gamma, beta, eps, y) },
        // SAFETY: forwarded contract.
        _ => unsafe { row::<Portable>(x, gamma, beta, eps, y) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(x: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, y: &mut [f32]) {
    // SAFETY: avx512f enabled here; contract forwarded.
    unsafe { row::<crate::simd::Avx512>(x, gamma, beta, eps, y) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(x: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, y: &mut [f32]) {
    // SAFETY: avx2+fma enabled here; contract forwarded.
    unsafe { row::<crate::simd::Avx2>(x, gamma, beta, eps, y) }
}

/// One row: the mean, the mean of squared deviations, then the affine output.
#[inline(always)]
unsafe fn row<S: Simd>(x: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32, y: &mut [f32]) {
    let n = x.len();
    let body = n / LANES * LANES;
    let xp = x.as_ptr();
    let yp = y.as_mut_ptr();
    // SAFETY: every vector access is at an offset c + LANES <= body <= n of `x`, `y`, gamma, beta.
    unsafe {
        let mut acc = S::zero();
        for c in (0..body).step_by(LANES) {
            acc = S::add(acc, S::load(xp.add(c)));
        }
        let sum = S::reduce_sum(acc) + x[body..].iter().sum::<f32>();
        let mean = sum * (1.0 / n as f32);
        let neg_mean = S::splat(-mean);
        let mut acc = S::zero();
        for c in (0..body).step_by(LANES) {
            let d = S::add(S::load(xp.add(c)), neg_mean);
            acc = S::fmadd(d, d, acc);
        }
        let sq = S::reduce_sum(acc) + x[body..].iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
        let inv = 1.0 / (sq * (1.0 / n as f32) + eps).sqrt();
        let vinv = S::splat(inv);
        for c in (0..body).step_by(LANES) {
            let mut v = S::mul(S::add(S::load(xp.add(c)), neg_mean), vinv);
            if let Some(g) = gamma {
                v = S::mul(v, S::load(g.as_ptr().add(c)));
            }
            if let Some(b) = beta {
                v = S::add(v, S::load(b.as_ptr().add(c)));
            }
            S::store(yp.add(c), v);
        }
        for c in body..n {
            let mut v = (x[c] - mean) * inv;
            if let Some(g) = gamma {
                v *= g[c];
            }
            if let Some(b) = beta {
                v += b[c];
            }
            y[c] = v;
        }
    }
}

/// Reference layer norm in f64; used by tests.
pub fn reference_layer_norm(x: &[f32], n: usize, gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for r in x.chunks_exact(n) {
        let mean = r.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        let var = r.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (c, v) in r.iter().enumerate() {
            let g = gamma.map_or(1.0, |g| g[c] as f64);
            let b = beta.map_or(0.0, |b| b[c] as f64);
            out.push(((*v as f64 - mean) * inv * g + b) as f32);
        }
    }
    out
}
