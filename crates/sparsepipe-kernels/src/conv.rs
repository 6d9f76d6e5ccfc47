//! 2-D convolutions over channels-first (NCHW) input as implicit GEMM: the weight `[O, C, kh, kw]`
//! is a `[K = C·kh·kw, O]` matrix (sparse or dense), and each job gathers the `K` shifted input
//! rows of one tile of output pixels into the packed tile the kernels read, so no im2col matrix
//! is ever laid out. The rows are copied from the image itself (pointwise convolutions) or from
//! its zero-padded stride phases, built once per call, where every tap of a run of outputs along
//! a row is one contiguous run.

use std::cell::Cell;

use rayon::prelude::*;

use crate::exec::{
    compute_chunks, plan_parts, with_scratch, zero_padding, OutPtr, Tile, TileKernel, COL_TILE, PAR_MIN_MACS,
};
use crate::phases::{copy_run, split_plane, Phases, PHASES_SLACK};
use crate::simd::{Portable, Simd, LANES};
use crate::{Isa, KernelError, Residual};

/// The geometry of a 2-D convolution of `[C, H, W]` images by a `[O, C, kh, kw]` weight, as
/// the `[K, O]` matrix whose row `(c·kh + dy)·kw + dx` holds tap `(c, dy, dx)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2d {
    /// Input channels.
    pub c: usize,
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    /// Vertical and horizontal stride.
    pub stride: (usize, usize),
    /// Vertical and horizontal dilation.
    pub dilation: (usize, usize),
    /// Zero rows above and zero columns left of the image.
    pub pad: (usize, usize),
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Conv2d {
    /// The geometry for `[c, h, w]` images, a `kh x kw` kernel and zero padding `pad_before`
    /// (top, left) and `pad_after` (bottom, right); an error names a zero kernel size, stride or
    /// dilation, or a window larger than the padded image.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (c, h, w): (usize, usize, usize),
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
        pad_before: (usize, usize),
        pad_after: (usize, usize),
    ) -> Result<Conv2d, KernelError> {
        let bad = |what: &str| Err(KernelError::Shape(format!("convolution {what}")));
        if kh == 0 || kw == 0 {
            return bad("needs a non-empty kernel");
        }
        if stride.0 == 0 || stride.1 == 0 || dilation.0 == 0 || dilation.1 == 0 {
            return bad(&format!("strides {stride:?} and dilations {dilation:?} must be positive"));
        }
        let out = |size: usize, k: usize, s: usize, d: usize, p: usize| {
            let span = d * (k - 1) + 1;
            (size + p >= span).then(|| (size + p - span) / s + 1)
        };
        let oh = out(h, kh, stride.0, dilation.0, pad_before.0 + pad_after.0);
        let ow = out(w, kw, stride.1, dilation.1, pad_before.1 + pad_after.1);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return bad(&format!("window {kh}x{kw} (dilation {dilation:?}) is larger than the padded {h}x{w} image"));
        };
        Ok(Conv2d { c, h, w, kh, kw, stride, dilation, pad: pad_before, oh, ow })
    }

    /// Rows of the weight matrix: `C·kh·kw`.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per image.
    pub fn cols(&self) -> usize {
        self.oh * self.ow
    }

    /// Whether the convolution is a plain channels-first matmul (1x1, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == (1, 1)
            && self.pad == (0, 0)
            && (self.oh, self.ow) == (self.h, self.w)
    }

    /// Input value under tap `(dy, dx)` of output `(oy, ox)` in channel `c` of image `b` of the
    /// NCHW `x`, or `None` in the padding (the references' one indexing rule).
    pub(crate) fn tap(
        &self,
        x: &[f32],
        (b, c): (usize, usize),
        (oy, ox): (usize, usize),
        (dy, dx): (usize, usize),
    ) -> Option<f32> {
        let iy = (oy * self.stride.0 + dy * self.dilation.0) as isize - self.pad.0 as isize;
        let ix = (ox * self.stride.1 + dx * self.dilation.1) as isize - self.pad.1 as isize;
        let inside = (0..self.h as isize).contains(&iy) && (0..self.w as isize).contains(&ix);
        inside.then(|| x[((b * self.c + c) * self.h + iy as usize) * self.w + ix as usize])
    }
}

/// `y = epi(conv(x, W))`, plus `add` then its clamp when given, for `x: [batch, C, H, W]` and
/// `y`, `add.values`: `[batch, N, oh, ow]` (lengths and `K` checked by the caller): one job per
/// (tile of output pixels, range of output channels), each gathering its tile's taps and writing
/// its channels' rows of `y` a chunk at a time while they are in cache. Tiles run over the
/// pixels of the whole batch, so small images (7x7) fill them across image boundaries.
pub(crate) fn run_conv<K: TileKernel>(
    kern: &K,
    isa: crate::Isa,
    g: &Conv2d,
    x: &[f32],
    batch: usize,
    add: Option<Residual<'_>>,
    y: &mut [f32],
) {
    let (k, n, cols) = (kern.k(), kern.n(), g.cols());
    if batch == 0 || cols == 0 || n == 0 {
        return;
    }
    let total = batch * cols;
    let tiles: Vec<TilePos> = (0..total).step_by(COL_TILE).map(|q0| (q0, COL_TILE.min(total - q0))).collect();
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && kern.macs_per_col().saturating_mul(batch * cols) >= PAR_MIN_MACS;
    let parts = if parallel { plan_parts(tiles.len(), COL_TILE, kern.macs_per_col(), n, threads) } else { 1 };
    let ranges = kern.channel_parts(parts);
    let jobs: Vec<(TilePos, (usize, usize))> =
        tiles.iter().flat_map(|&t| ranges.iter().map(move |&r| (t, r))).collect();
    let out = OutPtr(y.as_mut_ptr());
    let ph = (!g.is_pointwise()).then(|| Phases::new(g));
    let mut phases = PHASES.with(Cell::take);
    let src = match &ph {
        None => {
            Source { data: x, image: g.c * g.h * g.w, chan: g.h * g.w, pw: g.w, taps: &[0], far_tap: 0, flat: true }
        }
        Some(ph) => {
            let chan = ph.plane_len(g);
            build_phases(isa, g, ph, x, batch, parallel, &mut phases);
            let phases = &phases.0;
            let far_tap = ph.taps.iter().copied().max().unwrap_or(0);
            Source { data: phases, image: g.c * chan, chan, pw: ph.pw, taps: &ph.taps, far_tap, flat: false }
        }
    };
    // Adds the residual to (and clamps) `cnt` outputs at `at`, `src` being the sums.
    let finish = |at: usize, src: &[f32], dst: &mut [f32]| match add {
        Some(r) if r.clamps() => {
            let sums = dst.iter_mut().zip(src.iter().zip(&r.values[at..at + src.len()]));
            sums.for_each(|(d, (s, a))| *d = (s + a).max(r.min).min(r.max));
        }
        Some(r) => {
            let sums = dst.iter_mut().zip(src.iter().zip(&r.values[at..at + src.len()]));
            sums.for_each(|(d, (s, a))| *d = s + a);
        }
        None => dst.copy_from_slice(src),
    };
    let body = |&((q0, cnt), (ch0, ch1)): &(TilePos, (usize, usize))| {
        let w = cnt.div_ceil(LANES) * LANES;
        let chunk = crate::exec::CH_CHUNK.min(ch1 - ch0);
        // A whole tile inside one image is computed straight into `y` (its rows `cols` apart);
        // a partial one, whose padded width would overrun its rows, or one across images,
        // through scratch.
        let (b, c0) = (q0 / cols, q0 % cols);
        let direct = cnt == w && c0 + cnt <= cols;
        let xs = kern.row_stride(w);
        with_scratch(k * xs + if direct { 0 } else { chunk * w }, |buf| {
            let (xt, yt) = buf.split_at_mut(k * xs);
            gather(isa, g, &src, (q0, cnt), xt, (w, xs));
            if direct {
                let mut a = ch0;
                while a < ch1 {
                    let e = (a + crate::exec::CH_CHUNK).min(ch1);
                    // SAFETY: channels a..e of image `b` hold `cnt == w` outputs from pixel c0,
                    // rows `cols` apart, inside `y`; jobs write disjoint (image, pixels,
                    // channels) blocks; `xt` holds the tile's K rows of `w` floats `xs` apart.
                    let yt = unsafe { out.at((b * n + a) * cols + c0) };
                    let t = Tile { xt: xt.as_ptr(), xs, yt, w, ys: cols, ch0: a, ch1: e, cnt };
                    // SAFETY: as above.
                    unsafe { kern.tile(isa, &t) };
                    if let Some(r) = add {
                        for ch in a..e {
                            let at = (b * n + ch) * cols + c0;
                            // SAFETY: as above; the row was just written by this job alone.
                            let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), cnt) };
                            for (d, v) in dst.iter_mut().zip(&r.values[at..at + cnt]) {
                                *d = if r.clamps() { (*d + v).max(r.min).min(r.max) } else { *d + v };
                            }
                        }
                    }
                    a = e;
                }
                return;
            }
            compute_chunks(kern, isa, xt, (w, cnt), (ch0, ch1), yt, |a, e, done| {
                for (b, p, len, j0) in pieces(q0, cnt, cols) {
                    for ch in a..e {
                        let at = (b * n + ch) * cols + p;
                        // SAFETY: channel `ch`'s pixels p..p + len of image `b` lie inside `y`
                        // ((b·N + ch)·cols + p + len <= batch·N·cols); jobs write disjoint
                        // (pixels, channels) blocks.
                        let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), len) };
                        finish(at, &done[(ch - a) * w + j0..][..len], dst);
                    }
                }
            });
        })
    };
    if parallel {
        jobs.par_iter().for_each(body);
    } else {
        jobs.iter().for_each(body);
    }
    PHASES.with(|c| c.set(phases));
}

/// A phases buffer and the geometry and batch it was last laid out for.
type PhasesBuf = (Vec<f32>, Option<(Conv2d, usize)>);

thread_local! {
    /// The stride phases of the images of the last convolution run on this thread, kept so the
    /// next call reuses the memory (and, for the same geometry and batch, its zero padding).
    static PHASES: Cell<PhasesBuf> = const { Cell::new((Vec::new(), None)) };
}

/// Where a convolution's tiles are gathered from: per image and channel, rows of `pw` columns in
/// which the input under tap `t` of output `(oy, ox)` is at `taps[t] + oy·pw + ox`.
struct Source<'a> {
    /// The images' inputs, with room after the last for whole-vector reads where it is ours.
    data: &'a [f32],
    /// Floats per image and per channel of `data`.
    image: usize,
    chan: usize,
    pw: usize,
    taps: &'a [usize],
    /// The largest of `taps`.
    far_tap: usize,
    /// Whether consecutive output rows are consecutive in `data` (`pw` is the output width), so a
    /// tile is one run.
    flat: bool,
}

/// Lays the images `x` (`[batch, C, H, W]`) out as their zero-padded stride phases in `buf`
/// (`batch · C` planes and vector slack), a plane per job when `parallel`. Every plane of a
/// geometry writes the same positions, so a buffer last laid out for the same geometry and batch
/// keeps its zero padding; any other is zeroed first.
fn build_phases(isa: Isa, g: &Conv2d, ph: &Phases, x: &[f32], batch: usize, parallel: bool, buf: &mut PhasesBuf) {
    let chan = ph.plane_len(g);
    let planes = batch * g.c;
    let (buf, laid_out) = buf;
    if *laid_out != Some((*g, batch)) {
        buf.clear();
        buf.resize(planes * chan + PHASES_SLACK, 0.0);
        *laid_out = Some((*g, batch));
    }
    let plane = g.h * g.w;
    let one = |(i, dst): (usize, &mut [f32])| {
        with_scratch(ph.pw * g.stride.1, |tmp| {
            tmp.fill(0.0);
            let x = &x[i * plane..(i + 1) * plane];
            // SAFETY: `isa` was checked by the caller; `dst` is one plane's phases, zeroed.
            unsafe { split(isa, g, ph, x, dst, tmp) }
        })
    };
    let body = &mut buf[..planes * chan];
    if parallel && planes > 1 {
        body.par_chunks_mut(chan).enumerate().for_each(one);
    } else {
        body.chunks_mut(chan).enumerate().for_each(one);
    }
}

/// [`split_plane`] compiled for `isa`.
///
/// # Safety
/// `isa` must be supported by this CPU.
unsafe fn split(isa: Isa, g: &Conv2d, ph: &Phases, x: &[f32], dst: &mut [f32], tmp: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(g: &Conv2d, ph: &Phases, x: &[f32], dst: &mut [f32], tmp: &mut [f32]) {
        // SAFETY: avx512f enabled here.
        unsafe { split_plane::<crate::simd::Avx512>(g, ph, x, dst, tmp) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(g: &Conv2d, ph: &Phases, x: &[f32], dst: &mut [f32], tmp: &mut [f32]) {
        // SAFETY: avx2 enabled here.
        unsafe { split_plane::<crate::simd::Avx2>(g, ph, x, dst, tmp) }
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked the CPU supports the ISA.
        Isa::Avx512 => unsafe { avx512(g, ph, x, dst, tmp) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2(g, ph, x, dst, tmp) },
        // SAFETY: portable vectors need no CPU feature.
        _ => unsafe { split_plane::<Portable>(g, ph, x, dst, tmp) },
    }
}

/// Fills the packed tile `xt` (`K` rows of `w` floats, `xs` apart) with the `K` taps of the
/// batch's output pixels `q0..q0 + cnt` from `src`, zero in columns `cnt..w`.
fn gather(isa: Isa, g: &Conv2d, src: &Source<'_>, tile: TilePos, xt: &mut [f32], shape: TileShape) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(g: &Conv2d, src: &Source<'_>, tile: TilePos, xt: &mut [f32], shape: TileShape) {
        // SAFETY: avx512f enabled here.
        unsafe { gather_simd::<crate::simd::Avx512>(g, src, tile, xt, shape) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(g: &Conv2d, src: &Source<'_>, tile: TilePos, xt: &mut [f32], shape: TileShape) {
        // SAFETY: avx2 enabled here.
        unsafe { gather_simd::<crate::simd::Avx2>(g, src, tile, xt, shape) }
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the engine only passes an ISA this CPU supports (`check_io`).
        Isa::Avx512 => unsafe { avx512(g, src, tile, xt, shape) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2(g, src, tile, xt, shape) },
        // SAFETY: portable vectors need no CPU feature.
        _ => unsafe { gather_simd::<Portable>(g, src, tile, xt, shape) },
    }
}

/// A packed tile's width and row stride in floats (`(w, xs)`, see `exec::Tile`).
type TileShape = (usize, usize);

/// [`gather`] for one ISA: the tile's runs along output rows (one per image when the source is
/// flat), then for every input channel and tap one vector copy per run. Rows are written in order, each
/// run's whole-vector tail landing only on columns written later or zeroed at the end.
///
/// # Safety
/// `S` must be supported by this CPU.
#[inline(always)]
unsafe fn gather_simd<S: Simd>(g: &Conv2d, src: &Source<'_>, (q0, cnt): TilePos, xt: &mut [f32], (w, xs): TileShape) {
    // (offset in `data` for channel 0, first column of the tile, length) per run.
    let mut runs = [(0usize, 0usize, 0usize); COL_TILE];
    let mut nruns = 0;
    for (b, p0, len, j0) in pieces(q0, cnt, g.cols()) {
        if src.flat {
            runs[nruns] = (b * src.image + p0, j0, len);
            nruns += 1;
            continue;
        }
        let mut p = p0;
        while p < p0 + len {
            let (oy, ox) = (p / g.ow, p % g.ow);
            let run = (g.ow - ox).min(p0 + len - p);
            runs[nruns] = (b * src.image + oy * src.pw + ox, j0 + p - p0, run);
            nruns += 1;
            p += run;
        }
    }
    let data = src.data;
    let taps = src.taps.len();
    // The furthest any run reaches in `data` (last channel, furthest tap) and in `xt` (last row).
    let (src_end, dst_end) =
        runs[..nruns].iter().fold((0, 0), |(s, d), &(at, j0, len)| (s.max(at + len), d.max(j0 + len)));
    if g.c > 0 {
        assert!(
            (g.c - 1) * src.chan + src.far_tap + src_end <= data.len() && (g.c * taps - 1) * xs + dst_end <= xt.len(),
            "gather run outside its buffers"
        );
    }
    for ci in 0..g.c {
        for (t, &tap) in src.taps.iter().enumerate() {
            let (row, off) = ((ci * taps + t) * xs, ci * src.chan + tap);
            for &(at, j0, len) in &runs[..nruns] {
                let (from, to) = (off + at, row + j0);
                // SAFETY: both runs are inside their slices (the furthest checked above); the
                // rooms are the slices' remaining lengths.
                unsafe {
                    copy_run::<S>(
                        data.as_ptr().add(from),
                        data.len() - from,
                        xt.as_mut_ptr().add(to),
                        xt.len() - to,
                        len,
                    )
                };
            }
        }
    }
    zero_padding(xt, cnt, w, xs);
}

/// A tile of output pixels: the first (counted over the whole batch) and how many.
type TilePos = (usize, usize);

/// The tile `(q0, cnt)` image by image: `(image, first pixel, pixel count, first tile column)`.
fn pieces(q0: usize, cnt: usize, cols: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut q = q0;
    std::iter::from_fn(move || {
        (q < q0 + cnt).then(|| {
            let (b, p) = (q / cols, q % cols);
            let len = (cols - p).min(q0 + cnt - q);
            let piece = (b, p, len, q - q0);
            q += len;
            piece
        })
    })
}

/// Reference convolution `y = epi(conv(x, w)) ` with `w` `[O, C, kh, kw]`, straight loops in
/// f64; used by tests.
pub fn reference_conv(g: &Conv2d, w: &[f32], o: usize, epi: &crate::Epilogue, x: &[f32], batch: usize) -> Vec<f32> {
    let mut y = vec![0f32; batch * o * g.cols()];
    for b in 0..batch {
        for n in 0..o {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = epi.bias.as_ref().map_or(0.0, |v| v[n]) as f64;
                    for c in 0..g.c {
                        for dy in 0..g.kh {
                            for dx in 0..g.kw {
                                if let Some(xv) = g.tap(x, (b, c), (oy, ox), (dy, dx)) {
                                    acc += w[((n * g.c + c) * g.kh + dy) * g.kw + dx] as f64 * xv as f64;
                                }
                            }
                        }
                    }
                    y[((b * o + n) * g.oh + oy) * g.ow + ox] = epi.apply(acc as f32);
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_the_onnx_formula() {
        let g = Conv2d::new((3, 224, 224), (7, 7), (2, 2), (1, 1), (3, 3), (3, 3)).unwrap();
        assert_eq!((g.oh, g.ow, g.k()), (112, 112, 147));
        let g = Conv2d::new((8, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)).unwrap();
        assert_eq!((g.oh, g.ow), (7, 9));
        let g = Conv2d::new((8, 13, 13), (3, 3), (2, 2), (2, 2), (0, 1), (1, 0)).unwrap();
        assert_eq!((g.oh, g.ow), (5, 5));
        assert!(Conv2d::new((1, 2, 2), (5, 5), (1, 1), (1, 1), (0, 0), (0, 0)).is_err());
        assert!(Conv2d::new((1, 2, 2), (1, 1), (0, 1), (1, 1), (0, 0), (0, 0)).is_err());
        assert!(Conv2d::new((1, 2, 2), (0, 1), (1, 1), (1, 1), (0, 0), (0, 0)).is_err());
        // No input channels: every output is the bias.
        assert_eq!(Conv2d::new((0, 2, 2), (1, 1), (1, 1), (1, 1), (0, 0), (0, 0)).unwrap().k(), 0);
    }
}
