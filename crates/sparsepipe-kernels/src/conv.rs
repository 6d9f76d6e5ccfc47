//! 2-D convolutions over channels-first (NCHW) input as implicit GEMM: the weight `[O, C, kh, kw]`
//! is a `[K = C·kh·kw, O]` matrix (sparse or dense), and each job gathers the `K` shifted input
//! rows of one tile of output pixels straight from the image into the packed tile the kernels
//! read (zeros where the window hangs over the padding), so no im2col matrix is ever laid out.

use rayon::prelude::*;

use crate::exec::{
    compute_chunks, plan_parts, with_scratch, zero_padding, OutPtr, Tile, TileKernel, COL_TILE, PAR_MIN_MACS,
};
use crate::simd::LANES;
use crate::{KernelError, Residual};

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
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.pad == (0, 0) && self.oh == self.h
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

    /// The first output column of `0..n` whose input column `o·s + off` lies in `0..size`, and
    /// the end of that range (`lo == hi` when none does).
    pub(crate) fn valid(n: usize, s: usize, off: isize, size: usize) -> (usize, usize) {
        let s = s as isize;
        let lo = if off < 0 { (-off + s - 1) / s } else { 0 };
        let last = size as isize - 1 - off;
        let hi = if last < 0 { 0 } else { last / s + 1 };
        let (lo, hi) = (lo.clamp(0, n as isize) as usize, hi.clamp(0, n as isize) as usize);
        (lo, hi.max(lo))
    }

    /// Fills the packed tile `xt` (`[K][w]`) with the `K` taps of output pixels `p0..p0 + cnt`
    /// of the image `x` (`[C, H, W]`), zero where a tap falls in the padding and in columns
    /// `cnt..w`.
    fn gather(&self, x: &[f32], p0: usize, cnt: usize, xt: &mut [f32], w: usize) {
        let (sh, sw) = self.stride;
        let (dh, dw) = self.dilation;
        let plane = self.h * self.w;
        let mut p = p0;
        while p < p0 + cnt {
            let (oy, ox0) = (p / self.ow, p % self.ow);
            let seg = (self.ow - ox0).min(p0 + cnt - p);
            let j0 = p - p0;
            for dx in 0..self.kw {
                let off = (dx * dw) as isize - self.pad.1 as isize;
                let (lo, hi) = Self::valid(self.ow, sw, off, self.w);
                let (lo, hi) = (lo.clamp(ox0, ox0 + seg), hi.clamp(ox0, ox0 + seg));
                for dy in 0..self.kh {
                    let iy = (oy * sh + dy * dh) as isize - self.pad.0 as isize;
                    let inside = (0..self.h as isize).contains(&iy);
                    for ci in 0..self.c {
                        let row = (ci * self.kh + dy) * self.kw + dx;
                        let dst = &mut xt[row * w + j0..row * w + j0 + seg];
                        if !inside || lo == hi {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &x[ci * plane + iy as usize * self.w..][..self.w];
                        dst[..lo - ox0].fill(0.0);
                        dst[hi - ox0..].fill(0.0);
                        let first = (lo * sw) as isize + off;
                        if sw == 1 {
                            dst[lo - ox0..hi - ox0].copy_from_slice(&src[first as usize..first as usize + hi - lo]);
                        } else {
                            for (d, o) in dst[lo - ox0..hi - ox0].iter_mut().zip(0..) {
                                *d = src[first as usize + o * sw];
                            }
                        }
                    }
                }
            }
            p += seg;
        }
        zero_padding(xt, cnt, w);
    }
}

/// `y = epi(conv(x, W))`, plus `add` then its clamp when given, for `x: [batch, C, H, W]` and
/// `y`, `add.values`: `[batch, N, oh, ow]` (lengths and `K` checked by the caller): one job per (tile of output pixels, range of output
/// channels), each gathering its tile's taps and writing its channels' rows of `y` a chunk at a
/// time while they are in cache.
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
    let tiles: Vec<(usize, usize, usize)> =
        (0..batch).flat_map(|b| (0..cols).step_by(COL_TILE).map(move |c0| (b, c0, COL_TILE.min(cols - c0)))).collect();
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && kern.macs_per_col().saturating_mul(batch * cols) >= PAR_MIN_MACS;
    let parts = if parallel { plan_parts(tiles.len(), COL_TILE, kern.macs_per_col(), n, threads) } else { 1 };
    let ranges = kern.channel_parts(parts);
    let jobs: Vec<(TilePos, (usize, usize))> =
        tiles.iter().flat_map(|&t| ranges.iter().map(move |&r| (t, r))).collect();
    let out = OutPtr(y.as_mut_ptr());
    let image = g.c * g.h * g.w;
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
    let body = |&((b, c0, cnt), (ch0, ch1)): &(TilePos, (usize, usize))| {
        let w = cnt.div_ceil(LANES) * LANES;
        let chunk = crate::exec::CH_CHUNK.min(ch1 - ch0);
        // A whole tile is computed straight into `y` (its rows `cols` apart); a partial one,
        // whose padded width would overrun its rows, through scratch.
        let direct = cnt == w;
        with_scratch(k * w + if direct { 0 } else { chunk * w }, |buf| {
            let (xt, yt) = buf.split_at_mut(k * w);
            g.gather(&x[b * image..(b + 1) * image], c0, cnt, xt, w);
            if direct {
                let mut a = ch0;
                while a < ch1 {
                    let e = (a + crate::exec::CH_CHUNK).min(ch1);
                    let first = (b * n + a) * cols + c0;
                    // SAFETY: channels a..e of image `b` hold `cnt == w` outputs from pixel c0,
                    // rows `cols` apart, inside `y`; jobs write disjoint (image, pixels,
                    // channels) blocks; `xt` holds the tile's K rows of `w` floats.
                    let t = Tile { xt: xt.as_ptr(), yt: unsafe { out.at(first) }, w, ys: cols, ch0: a, ch1: e };
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
            compute_chunks(kern, isa, xt, w, (ch0, ch1), yt, |a, e, done| {
                for ch in a..e {
                    let at = (b * n + ch) * cols + c0;
                    // SAFETY: channel `ch`'s pixels c0..c0 + cnt of image `b` lie inside `y`
                    // ((b·N + ch)·cols + c0 + cnt <= batch·N·cols); jobs write disjoint
                    // (image, pixels, channels) blocks.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), cnt) };
                    finish(at, &done[(ch - a) * w..][..cnt], dst);
                }
            });
        })
    };
    if parallel {
        jobs.par_iter().for_each(body);
    } else {
        jobs.iter().for_each(body);
    }
}

/// A tile of output pixels: image, first pixel, pixel count.
type TilePos = (usize, usize, usize);

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

    #[test]
    fn valid_columns_stay_inside_the_image() {
        for size in 1..12 {
            for s in 1..4 {
                for off in -6isize..6 {
                    let n = 10;
                    let (lo, hi) = Conv2d::valid(n, s, off, size);
                    for o in 0..n {
                        let i = (o * s) as isize + off;
                        assert_eq!((lo..hi).contains(&o), (0..size as isize).contains(&i), "{size} {s} {off} {o}");
                    }
                }
            }
        }
    }
}
