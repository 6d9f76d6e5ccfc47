//! Depthwise 2-D convolutions (one `kh x kw` filter per channel) and max pooling, computed
//! directly on NCHW planes: each plane is copied once into its padded stride phases
//! ([`crate::phases`]), so every tap of a band of output rows laid end to end is one contiguous
//! run, summed (or maximised) over every tap a few vectors at a time in registers; the bias,
//! activation, clamp and a residual are applied on the way out.

use rayon::prelude::*;

use crate::conv::Conv2d;
use crate::exec::with_scratch;
use crate::isa::Isa;
use crate::phases::{split_plane, Phases, PHASES_SLACK};
use crate::simd::{Portable, Simd, LANES};
use crate::{Activation, Epilogue, KernelError, Residual};

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
        run_planes(Reduce::Weighted(self), isa, g, x, batch, add, y)
    }
}

/// Max pooling `y = max over each window of x` for `x: [batch, C, H, W]` and `y: [batch, C, oh,
/// ow]` under the geometry `g` (the padding never wins: it counts as `-inf`), planes in parallel
/// on the current rayon pool.
pub fn max_pool(isa: Isa, g: &Conv2d, x: &[f32], batch: usize, y: &mut [f32]) -> Result<(), KernelError> {
    run_planes(Reduce::Max, isa, g, x, batch, None, y)
}

/// What a window of taps reduces to: a depthwise convolution's weighted sum (then its epilogue)
/// or the maximum.
#[derive(Clone, Copy)]
enum Reduce<'a> {
    Weighted(&'a Depthwise),
    Max,
}

/// Runs `red` over every plane of `x`, a few planes per job so each job computes at least
/// [`MIN_JOB_OUTPUTS`] outputs.
fn run_planes(
    red: Reduce<'_>,
    isa: Isa,
    g: &Conv2d,
    x: &[f32],
    batch: usize,
    add: Option<Residual<'_>>,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let (plane_in, plane_out) = (g.h * g.w, g.cols());
    let values = add.map(|r| r.values);
    crate::check_io(isa, x, [batch, g.c, plane_in], values, y, [batch, g.c, plane_out])?;
    if plane_out == 0 || batch == 0 || g.c == 0 {
        return Ok(());
    }
    let per_job = MIN_JOB_OUTPUTS.div_ceil(plane_out).max(1);
    let planes = batch * g.c;
    let layout = Layout::new(g);
    let pad = if matches!(red, Reduce::Max) { f32::NEG_INFINITY } else { 0.0 };
    let job = |(j, out): (usize, &mut [f32])| {
        with_scratch(layout.scratch_len_of(g), |buf| {
            // Every plane writes the same positions of the padded phases: the padding around
            // them is filled once.
            buf.fill(pad);
            for (i, y_plane) in out.chunks_mut(plane_out).enumerate() {
                let p = j * per_job + i;
                let x_plane = &x[p * plane_in..(p + 1) * plane_in];
                let add = add.map(|r| Residual { values: &r.values[p * plane_out..(p + 1) * plane_out], ..r });
                let one = Plane { g, l: &layout, c: p % g.c, x: x_plane, add };
                // SAFETY: the ISA was checked above; `buf` holds the layout's scratch.
                unsafe { plane(red, isa, &one, y_plane, buf) };
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
/// `isa` must be supported by this CPU and `buf` hold the layout's scratch, filled with the
/// padding value where no plane writes.
unsafe fn plane(red: Reduce<'_>, isa: Isa, p: &Plane<'_>, y: &mut [f32], buf: &mut [f32]) {
    match (isa, red) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked the CPU supports the ISA and sized `buf`.
        (Isa::Avx512, _) => unsafe { plane_avx512(red, p, y, buf) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, _) => unsafe { plane_avx2(red, p, y, buf) },
        // SAFETY: the caller sized `buf`.
        (_, Reduce::Max) => unsafe { plane_simd::<Portable, true>(red, p, y, buf) },
        // SAFETY: as above.
        _ => unsafe { plane_simd::<Portable, false>(red, p, y, buf) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn plane_avx512(red: Reduce<'_>, p: &Plane<'_>, y: &mut [f32], buf: &mut [f32]) {
    // SAFETY: avx512f enabled here; buffer sizes are plane_simd's contract.
    unsafe {
        match red {
            Reduce::Max => plane_simd::<crate::simd::Avx512, true>(red, p, y, buf),
            Reduce::Weighted(_) => plane_simd::<crate::simd::Avx512, false>(red, p, y, buf),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(red: Reduce<'_>, p: &Plane<'_>, y: &mut [f32], buf: &mut [f32]) {
    // SAFETY: avx2+fma enabled here; buffer sizes are plane_simd's contract.
    unsafe {
        match red {
            Reduce::Max => plane_simd::<crate::simd::Avx2, true>(red, p, y, buf),
            Reduce::Weighted(_) => plane_simd::<crate::simd::Avx2, false>(red, p, y, buf),
        }
    }
}

/// One plane's inputs: channel `c` of the geometry `g` laid out as `l`, its input plane `x`
/// (`[H, W]`) and the addend of its output plane.
struct Plane<'a> {
    g: &'a Conv2d,
    l: &'a Layout,
    c: usize,
    x: &'a [f32],
    add: Option<Residual<'a>>,
}

/// Vectors of outputs summed in registers at a time: eight AVX2 registers of sums cover the
/// latency of two FMA ports.
const GROUP: usize = 4;
/// Floats past the band that the last group's writes may reach.
const SLACK: usize = GROUP * LANES;
const _: () = assert!(PHASES_SLACK >= SLACK + LANES);

/// Where a geometry's planes live in scratch, worked out once per call: the plane's stride
/// phases, one zero-padded input row (`pw·sw`, for splitting rows into column phases) and a band
/// of output rows.
struct Layout {
    ph: Phases,
    /// Output rows per band: a band's sums (`rows x pw` floats) stay within a quarter of L1.
    band: usize,
}

impl Layout {
    fn new(g: &Conv2d) -> Layout {
        let ph = Phases::new(g);
        let band = (crate::cache::l1d_bytes() / 4 / 4 / ph.pw).clamp(1, g.oh);
        Layout { ph, band }
    }

    /// Floats of the padded phases, their slack included.
    fn phases_len(&self, g: &Conv2d) -> usize {
        self.ph.plane_len(g) + PHASES_SLACK
    }

    /// Floats of scratch a plane takes: the phases, the padded row, the band and its slack.
    fn scratch_len_of(&self, g: &Conv2d) -> usize {
        self.phases_len(g) + self.ph.pw * g.stride.1 + self.band * self.ph.pw + SLACK
    }
}

/// Computes the output plane `y` (`[oh, ow]`) of `p` in `buf` (the layout's scratch, holding
/// the padding value wherever no plane writes): the maximum of each window when `MAX`, else the
/// weighted sum of `red`. Plain loops, no closures, so the caller's target features apply to
/// every line.
///
/// Output `(oy, ox)` reads tap `(dy, dx)` at flat offset `oy·pw + ox + offsets[tap]` of the
/// phases: a band of output rows laid end to end (the `pw - ow` columns past each row's end are
/// computed and dropped) is summed [`GROUP`] vectors at a time in registers over every tap,
/// then finished (bias, activation) and stored once.
///
/// # Safety
/// `S` must be supported by this CPU; `buf` holds the layout's scratch.
#[inline(always)]
unsafe fn plane_simd<S: Simd, const MAX: bool>(red: Reduce<'_>, p: &Plane<'_>, y: &mut [f32], buf: &mut [f32]) {
    let (g, l, x, add) = (p.g, p.l, p.x, p.add);
    let pw = l.ph.pw;
    let (padded, rest) = buf.split_at_mut(l.phases_len(g));
    let (tmp, acc) = rest.split_at_mut(pw * g.stride.1);
    // SAFETY: the caller's ISA; padding positions of `padded` and `tmp` are zero (the caller
    // zeroed the scratch and every plane writes the same positions).
    unsafe { split_plane::<S>(g, &l.ph, x, padded, tmp) };
    let (taps, offsets) = (g.kh * g.kw, &l.ph.taps[..]);
    let (weights, bias, clamp, act, (lo, hi)) = match red {
        Reduce::Weighted(m) => {
            let w = &m.weights[p.c * taps..(p.c + 1) * taps];
            (w, m.bias[p.c], m.epi.clamps(), m.epi.act, (m.epi.min, m.epi.max))
        }
        Reduce::Max => (&[][..], f32::NEG_INFINITY, false, Activation::None, (0.0, 0.0)),
    };
    let mut oy0 = 0;
    while oy0 < g.oh {
        let rows = l.band.min(g.oh - oy0);
        let (flat, base) = (rows * pw, oy0 * pw);
        // SAFETY: every read is at `base + o + offset + v·LANES + LANES <= padded.len()`: the
        // band's last flat output lies within its phase (spare row), and `o` runs at most
        // `GROUP` vectors past it into the zeroed slack; writes stay inside `acc` likewise.
        unsafe {
            let (pp, ap) = (padded.as_ptr(), acc.as_mut_ptr());
            let (lo, hi, b) = (S::splat(lo), S::splat(hi), S::splat(bias));
            let mut o = 0;
            while o < flat {
                let mut sums = [b; GROUP];
                if MAX {
                    for &off in offsets {
                        let src = pp.add(base + o + off);
                        for (v, a) in sums.iter_mut().enumerate() {
                            *a = S::max(*a, S::load(src.add(v * LANES)));
                        }
                    }
                } else {
                    for (&w, &off) in weights.iter().zip(offsets) {
                        let src = pp.add(base + o + off);
                        let wv = S::splat(w);
                        for (v, a) in sums.iter_mut().enumerate() {
                            *a = S::fmadd(S::load(src.add(v * LANES)), wv, *a);
                        }
                    }
                }
                for (v, a) in sums.iter().enumerate() {
                    let a = crate::simd::activate::<S>(act, *a);
                    let a = if clamp { S::min(S::max(a, lo), hi) } else { a };
                    S::store(ap.add(o + v * LANES), a);
                }
                o += GROUP * LANES;
            }
        }
        for r in 0..rows {
            let oy = oy0 + r;
            let out = &mut y[oy * g.ow..(oy + 1) * g.ow];
            out.copy_from_slice(&acc[r * pw..r * pw + g.ow]);
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

/// Reference max pooling (padding ignored; an all-padding window gives `-inf`); used by tests.
pub fn reference_max_pool(g: &Conv2d, x: &[f32], batch: usize) -> Vec<f32> {
    let mut y = vec![f32::NEG_INFINITY; batch * g.c * g.cols()];
    for b in 0..batch {
        for c in 0..g.c {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let out = &mut y[((b * g.c + c) * g.oh + oy) * g.ow + ox];
                    for dy in 0..g.kh {
                        for dx in 0..g.kw {
                            if let Some(v) = g.tap(x, (b, c), (oy, ox), (dy, dx)) {
                                *out = out.max(v);
                            }
                        }
                    }
                }
            }
        }
    }
    y
}
