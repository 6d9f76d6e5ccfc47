//! Depthwise 2-D convolutions (one `kh x kw` filter per channel) computed directly on NCHW
//! planes: each plane is copied once into a zero-padded buffer split into `stride` column phases,
//! so every tap of every output row is one contiguous multiply-add over the row, vectorised
//! along the output columns; the bias, clamp and a residual are applied while the row is hot.

use rayon::prelude::*;

use crate::conv::Conv2d;
use crate::exec::with_scratch;
use crate::isa::Isa;
use crate::{Epilogue, KernelError, Residual};

/// A depthwise convolution's weights, `[C, kh, kw]`, and its epilogue.
#[derive(Debug, Clone)]
pub struct Depthwise {
    c: usize,
    kh: usize,
    kw: usize,
    weights: Vec<f32>,
    epi: Epilogue,
    bias: Vec<f32>,
}

/// Planes per parallel job at least: smaller jobs cost more to hand out than they compute.
const MIN_JOB_OUTPUTS: usize = 4096;

impl Depthwise {
    /// The convolution of `c` channels, one `kh x kw` filter each, with the `[C, kh, kw]`
    /// weights `w`; an error when `w` has another length.
    pub fn new(c: usize, (kh, kw): (usize, usize), w: &[f32], epi: Epilogue) -> Result<Depthwise, KernelError> {
        if w.len() != c * kh * kw {
            return Err(KernelError::Shape(format!(
                "depthwise weights have {} values, expected {c}x{kh}x{kw}",
                w.len()
            )));
        }
        let bias = epi.bias_or_zeros(c);
        Ok(Depthwise { c, kh, kw, weights: w.to_vec(), epi, bias })
    }

    /// `y = epi(dwconv(x))`, then `clamp(y + add)` when given, for `x: [batch, C, H, W]` and
    /// `y`, `add.values`: `[batch, C, oh, ow]` under the geometry `g` (whose channels and kernel
    /// must be this convolution's), planes in parallel on the current rayon pool.
    pub fn run(
        &self,
        isa: Isa,
        g: &Conv2d,
        x: &[f32],
        batch: usize,
        add: Option<Residual<'_>>,
        y: &mut [f32],
    ) -> Result<(), KernelError> {
        if (g.c, g.kh, g.kw) != (self.c, self.kh, self.kw) {
            return Err(KernelError::Shape(format!(
                "the geometry has {} channels and a {}x{} kernel; the depthwise weights {} and {}x{}",
                g.c, g.kh, g.kw, self.c, self.kh, self.kw
            )));
        }
        let (plane_in, plane_out) = (g.h * g.w, g.cols());
        let values = add.map(|r| r.values);
        crate::check_io(isa, x, [batch, g.c, plane_in], values, y, [batch, g.c, plane_out])?;
        if plane_out == 0 || batch == 0 || g.c == 0 {
            return Ok(());
        }
        let per_job = MIN_JOB_OUTPUTS.div_ceil(plane_out).max(1);
        let planes = batch * g.c;
        let scratch = scratch_len(g);
        let job = |(j, out): (usize, &mut [f32])| {
            with_scratch(scratch, |buf| {
                for (i, y_plane) in out.chunks_mut(plane_out).enumerate() {
                    let p = j * per_job + i;
                    let x_plane = &x[p * plane_in..(p + 1) * plane_in];
                    let add = add.map(|r| Residual { values: &r.values[p * plane_out..(p + 1) * plane_out], ..r });
                    // SAFETY: the ISA was checked above.
                    unsafe { self.plane(isa, g, p % g.c, x_plane, add, y_plane, buf) };
                }
            })
        };
        if rayon::current_num_threads() > 1 && planes > per_job {
            y.par_chunks_mut(per_job * plane_out).enumerate().for_each(job);
        } else {
            y.chunks_mut(per_job * plane_out).enumerate().for_each(job);
        }
        Ok(())
    }

    /// One channel's plane, compiled for `isa`.
    ///
    /// # Safety
    /// `isa` must be supported by this CPU.
    #[allow(clippy::too_many_arguments)]
    unsafe fn plane(
        &self,
        isa: Isa,
        g: &Conv2d,
        c: usize,
        x: &[f32],
        add: Option<Residual<'_>>,
        y: &mut [f32],
        buf: &mut [f32],
    ) {
        let p = Plane { g, c, x, add };
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked the CPU supports the ISA.
            Isa::Avx512 => unsafe { plane_avx512(self, &p, y, buf) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { plane_avx2(self, &p, y, buf) },
            _ => plane_generic::<false>(self, &p, y, buf),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn plane_avx512(m: &Depthwise, p: &Plane<'_>, y: &mut [f32], buf: &mut [f32]) {
    plane_generic::<true>(m, p, y, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(m: &Depthwise, p: &Plane<'_>, y: &mut [f32], buf: &mut [f32]) {
    plane_generic::<true>(m, p, y, buf)
}

/// One plane's inputs: channel `c` of the geometry `g`, its input plane `x` (`[H, W]`) and the
/// addend of its output plane.
struct Plane<'a> {
    g: &'a Conv2d,
    c: usize,
    x: &'a [f32],
    add: Option<Residual<'a>>,
}

/// Floats of scratch a plane takes: the padded plane's phases and a band of output rows.
fn scratch_len(g: &Conv2d) -> usize {
    let (hq, pw) = padded_dims(g);
    g.stride.0 * g.stride.1 * hq * pw + band_rows(g) * pw
}

/// Rows and columns of each of the `stride.0 x stride.1` phases of the padded plane (phase
/// `(py, px)` holds padded rows `≡ py` and columns `≡ px`), with a spare zero row so the
/// flattened reads of the last band stay inside.
fn padded_dims(g: &Conv2d) -> (usize, usize) {
    let hp = (g.oh - 1) * g.stride.0 + (g.kh - 1) * g.dilation.0 + 1;
    let span = (g.ow - 1) * g.stride.1 + (g.kw - 1) * g.dilation.1 + 1;
    (hp.div_ceil(g.stride.0) + 1, span.div_ceil(g.stride.1))
}

/// Output rows per band: a band's sums (`rows x phase width` floats) stay within a quarter of L1.
fn band_rows(g: &Conv2d) -> usize {
    let (_, pw) = padded_dims(g);
    (crate::cache::l1d_bytes() / 4 / 4 / pw).clamp(1, g.oh)
}

/// Computes the output plane `y` (`[oh, ow]`) of `p` in `buf` ([`scratch_len`] floats), with
/// fused multiply-adds when `FMA` (only where the CPU has them: elsewhere they are calls). Plain
/// loops, no closures, so the caller's target features apply to every line.
///
/// The padded plane is split into stride phases of `pw` columns, so output `(oy, ox)` reads tap
/// `(dy, dx)` at flat offset `oy·pw + ox + (dy·dh / sh)·pw + dx·dw / sw` of phase
/// `(dy·dh % sh, dx·dw % sw)`: each tap is one multiply-add over a band of rows laid end to end
/// (the `pw - ow` columns past each row's end are computed and dropped).
#[inline(always)]
fn plane_generic<const FMA: bool>(m: &Depthwise, p: &Plane<'_>, y: &mut [f32], buf: &mut [f32]) {
    let (g, c, x, add) = (p.g, p.c, p.x, p.add);
    let (sh, sw) = g.stride;
    let (dh, dw) = g.dilation;
    let (hq, pw) = padded_dims(g);
    let phase_len = hq * pw;
    let (padded, acc) = buf.split_at_mut(sh * sw * phase_len);
    for py in 0..sh {
        for q in 0..hq {
            let iy = (q * sh + py) as isize - g.pad.0 as isize;
            let src = if (0..g.h as isize).contains(&iy) { Some(&x[iy as usize * g.w..][..g.w]) } else { None };
            for px in 0..sw {
                let start = (py * sw + px) * phase_len + q * pw;
                let dst = &mut padded[start..start + pw];
                let Some(row) = src else {
                    dst.fill(0.0);
                    continue;
                };
                // Column j of this phase is input column j·sw + px - pad.
                let (lo, hi) = Conv2d::valid(pw, sw, px as isize - g.pad.1 as isize, g.w);
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                let first = lo * sw + px - g.pad.1;
                if sw == 1 {
                    dst[lo..hi].copy_from_slice(&row[first..first + hi - lo]);
                } else {
                    for (j, d) in dst[lo..hi].iter_mut().enumerate() {
                        *d = row[first + j * sw];
                    }
                }
            }
        }
    }
    let taps = &m.weights[c * g.kh * g.kw..(c + 1) * g.kh * g.kw];
    let bias = m.bias[c];
    let (lo, hi) = (m.epi.min, m.epi.max);
    let (clamp, gelu) = (m.epi.clamps(), m.epi.gelu);
    let band = band_rows(g);
    let mut oy0 = 0;
    while oy0 < g.oh {
        let rows = band.min(g.oh - oy0);
        let sums = &mut acc[..rows * pw];
        sums.fill(bias);
        for dy in 0..g.kh {
            let (py, qy) = ((dy * dh) % sh, (dy * dh) / sh);
            for dx in 0..g.kw {
                let w = taps[dy * g.kw + dx];
                let (px, qx) = ((dx * dw) % sw, (dx * dw) / sw);
                let start = (py * sw + px) * phase_len + (oy0 + qy) * pw + qx;
                let src = &padded[start..start + rows * pw];
                if FMA {
                    for (a, v) in sums.iter_mut().zip(src) {
                        *a = v.mul_add(w, *a);
                    }
                } else {
                    for (a, v) in sums.iter_mut().zip(src) {
                        *a += v * w;
                    }
                }
            }
        }
        for r in 0..rows {
            let oy = oy0 + r;
            let out = &mut y[oy * g.ow..(oy + 1) * g.ow];
            let row = &sums[r * pw..r * pw + g.ow];
            if gelu {
                for (o, a) in out.iter_mut().zip(row) {
                    *o = m.epi.apply(*a);
                }
            } else if clamp {
                for (o, a) in out.iter_mut().zip(row) {
                    *o = a.max(lo).min(hi);
                }
            } else {
                out.copy_from_slice(row);
            }
            if let Some(r) = add {
                let vals = &r.values[oy * g.ow..(oy + 1) * g.ow];
                if r.clamps() {
                    for (o, v) in out.iter_mut().zip(vals) {
                        *o = (*o + v).max(r.min).min(r.max);
                    }
                } else {
                    for (o, v) in out.iter_mut().zip(vals) {
                        *o += v;
                    }
                }
            }
        }
        oy0 += rows;
    }
}

/// Reference depthwise convolution in f64 with `w` `[C, kh, kw]`; used by tests.
pub fn reference_depthwise(g: &Conv2d, w: &[f32], epi: &Epilogue, x: &[f32], batch: usize) -> Vec<f32> {
    let mut y = vec![0f32; batch * g.c * g.cols()];
    for b in 0..batch {
        for c in 0..g.c {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = epi.bias.as_ref().map_or(0.0, |v| v[c]) as f64;
                    for dy in 0..g.kh {
                        for dx in 0..g.kw {
                            if let Some(xv) = g.tap(x, (b, c), (oy, ox), (dy, dx)) {
                                acc += w[(c * g.kh + dy) * g.kw + dx] as f64 * xv as f64;
                            }
                        }
                    }
                    y[((b * g.c + c) * g.oh + oy) * g.ow + ox] = epi.apply(acc as f32);
                }
            }
        }
    }
    y
}
