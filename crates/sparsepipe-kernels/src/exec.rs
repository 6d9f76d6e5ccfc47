//! The shared driver: lays activations out channels-first, splits the work into tiles and runs
//! them on the current rayon pool, then lays the result back out.

use std::cell::Cell;

use rayon::prelude::*;

use crate::isa::Isa;
use crate::simd::LANES;

/// Columns (tokens or pixels) per parallel job.
const COL_TILE: usize = 64;
/// Below this many multiply-adds a call runs on the calling thread alone.
const PAR_MIN_MACS: usize = 1 << 16;
/// Row-major calls with fewer rows than this use the kernel's row path when it has one.
pub(crate) const SMALL_M: usize = 4;

/// One job: channels `ch0..ch1` over `ncols` columns (a multiple of [`LANES`]) of a
/// channels-first input `xt` (`[K, ncols]`, row stride `ldx`) into `yt` (`[N, ncols]`, stride `ldy`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    pub xt: *const f32,
    pub ldx: usize,
    pub yt: *mut f32,
    pub ldy: usize,
    pub ncols: usize,
    pub ch0: usize,
    pub ch1: usize,
}

// SAFETY: a Tile is only built by `run_tiles`, whose jobs read shared immutable input and write
// pairwise disjoint (channel range x column range) regions of the output.
unsafe impl Send for Tile {}
// SAFETY: as above; a Tile is plain data and is never used to create aliasing `&mut`.
unsafe impl Sync for Tile {}

/// A packed weight that computes channels-first tiles.
pub(crate) trait TileKernel: Sync {
    fn k(&self) -> usize;
    fn n(&self) -> usize;
    /// Multiply-adds per output column over all channels.
    fn macs_per_col(&self) -> usize;
    /// Splits `0..n` into at most `parts` channel ranges of about equal work.
    fn channel_parts(&self, parts: usize) -> Vec<(usize, usize)>;
    /// Computes one tile.
    ///
    /// # Safety
    /// The tile's pointers must be valid for the extents it names and `isa` supported.
    unsafe fn tile(&self, isa: Isa, t: &Tile);
    /// Row-major `y[m, n]` for small `m`, or `false` when the kernel has no such path.
    fn rows(&self, _isa: Isa, _x: &[f32], _m: usize, _y: &mut [f32]) -> bool {
        false
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Computes `y = x·W` where `x` is `[outer, K, inner]` and `y` is `[outer, N, inner]`
/// (`inner == 1` is the row-major `[M, K]` case). Slice lengths are checked by the caller.
pub(crate) fn run<K: TileKernel>(kern: &K, isa: Isa, x: &[f32], outer: usize, inner: usize, y: &mut [f32]) {
    let (k, n) = (kern.k(), kern.n());
    if outer == 0 || inner == 0 || n == 0 {
        return;
    }
    if inner == 1 {
        let m = outer;
        if m < SMALL_M && kern.rows(isa, x, m, y) {
            return;
        }
        let mp = round_up(m, LANES);
        with_scratch(k * mp + n * mp, |buf| {
            let (xt, yt) = buf.split_at_mut(k * mp);
            transpose(x, m, k, k, xt, mp);
            run_tiles(kern, isa, &[(xt.as_ptr(), yt.as_mut_ptr())], mp, mp, mp);
            transpose(yt, n, m, mp, y, n);
        });
    } else if inner % LANES == 0 {
        let batches: Vec<_> = (0..outer)
            // SAFETY: offsets stay inside `x` ([outer, k, inner]) and `y` ([outer, n, inner]).
            .map(|b| unsafe { (x.as_ptr().add(b * k * inner), y.as_mut_ptr().add(b * n * inner)) })
            .collect();
        run_tiles(kern, isa, &batches, inner, inner, inner);
    } else {
        let ip = round_up(inner, LANES);
        with_scratch(outer * (k + n) * ip, |buf| {
            let (xt, yt) = buf.split_at_mut(outer * k * ip);
            xt.par_chunks_mut(ip).zip(x.par_chunks(inner)).for_each(|(d, s)| d[..inner].copy_from_slice(s));
            let batches: Vec<_> = (0..outer)
                // SAFETY: offsets stay inside the padded buffers ([outer, k|n, ip]).
                .map(|b| unsafe { (xt.as_ptr().add(b * k * ip), yt.as_mut_ptr().add(b * n * ip)) })
                .collect();
            run_tiles(kern, isa, &batches, ip, ip, ip);
            y.par_chunks_mut(inner).zip(yt.par_chunks(ip)).for_each(|(d, s)| d.copy_from_slice(&s[..inner]));
        });
    }
}

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on a per-thread buffer of `len` floats, reused across calls (a re-entrant call on
/// the same thread gets a fresh one). Its contents are unspecified but initialized.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(Cell::take);
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|c| {
        let other = c.take();
        c.set(if other.len() > buf.len() { other } else { buf });
    });
    r
}

/// Runs every (batch, column tile, channel range) job, in parallel when the work pays for it.
fn run_tiles<K: TileKernel>(
    kern: &K,
    isa: Isa,
    batches: &[(*const f32, *mut f32)],
    ldx: usize,
    ldy: usize,
    ncols: usize,
) {
    let threads = rayon::current_num_threads();
    let macs = kern.macs_per_col().saturating_mul(ncols).saturating_mul(batches.len());
    if threads <= 1 || macs < PAR_MIN_MACS {
        for &(xt, yt) in batches {
            let t = Tile { xt, ldx, yt, ldy, ncols, ch0: 0, ch1: kern.n() };
            // SAFETY: the caller passes buffers of `[k|n, ld]` floats per batch, `isa` checked.
            unsafe { kern.tile(isa, &t) };
        }
        return;
    }
    let col_tiles = ncols.div_ceil(COL_TILE);
    let base = col_tiles * batches.len();
    let parts = (4 * threads).div_ceil(base).clamp(1, kern.n().div_ceil(8).max(1));
    let ranges = kern.channel_parts(parts);
    let mut jobs = Vec::with_capacity(base * ranges.len());
    for &(xt, yt) in batches {
        for ct in 0..col_tiles {
            let c0 = ct * COL_TILE;
            let w = COL_TILE.min(ncols - c0);
            for &(ch0, ch1) in &ranges {
                // SAFETY: c0 < ncols <= ldx, ldy: the offsets stay inside each batch's buffers.
                let (xt, yt) = unsafe { (xt.add(c0), yt.add(c0)) };
                jobs.push(Tile { xt, ldx, yt, ldy, ncols: w, ch0, ch1 });
            }
        }
    }
    // SAFETY: jobs cover disjoint output regions; pointers are valid for the tiles they name.
    jobs.par_iter().for_each(|t| unsafe { kern.tile(isa, t) });
}

/// `dst[c * ld_dst + r] = src[r * ld_src + c]` for `r < rows`, `c < cols`, in parallel over
/// blocks of destination rows.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, ld_src: usize, dst: &mut [f32], ld_dst: usize) {
    const B: usize = 16;
    let body = |c0: usize, chunk: &mut [f32]| {
        let nrows = (chunk.len() / ld_dst).min(cols - c0);
        for r0 in (0..rows).step_by(B) {
            let r1 = (r0 + B).min(rows);
            for dc in 0..nrows {
                let c = c0 + dc;
                let drow = &mut chunk[dc * ld_dst..];
                for r in r0..r1 {
                    drow[r] = src[r * ld_src + c];
                }
            }
        }
    };
    let rows_per_chunk = B;
    let chunk = rows_per_chunk * ld_dst;
    let dst = &mut dst[..cols * ld_dst];
    if rows * cols < PAR_MIN_MACS / 4 {
        dst.chunks_mut(chunk).enumerate().for_each(|(i, ch)| body(i * rows_per_chunk, ch));
    } else {
        dst.par_chunks_mut(chunk).enumerate().for_each(|(i, ch)| body(i * rows_per_chunk, ch));
    }
}

/// Splits `0..n` into at most `parts` ranges whose cumulative work (a prefix sum of `n + 1`
/// entries) is about equal, each a multiple of `align` channels except the last.
pub(crate) fn balanced_parts(prefix: &[usize], parts: usize, align: usize) -> Vec<(usize, usize)> {
    let n = prefix.len() - 1;
    let total = prefix[n];
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 1..=parts {
        let end = if p == parts {
            n
        } else {
            let target = total / parts * p + (total % parts) * p / parts;
            let e = prefix.partition_point(|&v| v < target).min(n);
            (e.div_ceil(align) * align).min(n)
        };
        if end > start {
            out.push((start, end));
            start = end;
        }
    }
    if out.is_empty() {
        out.push((0, n));
    }
    out
}
