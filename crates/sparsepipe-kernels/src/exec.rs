//! The shared driver: lays activations out channels-first, splits the work into tiles and runs
//! them on the current rayon pool, then lays the result back out.

use std::cell::Cell;

use rayon::prelude::*;

use crate::isa::Isa;
use crate::simd::LANES;
use crate::transpose::transpose;

/// Columns (tokens or pixels) per packed tile and per parallel job.
pub(crate) const COL_TILE: usize = 64;
/// Below this many multiply-adds (about 15 us on one core) a call runs on the calling thread
/// alone: joining the pool's (awake) threads costs more than splitting saves.
pub(crate) const PAR_MIN_MACS: usize = 1 << 19;
/// Output channels computed at a time in a row-major tile: their outputs (60 KiB for a 64-row
/// tile) stay in cache through every block of input channels and are written to `y` right after,
/// so no tile's whole output is ever laid out (a multiple of both dense panel widths, 6 and 8).
pub(crate) const CH_CHUNK: usize = 240;

/// One job: channels `ch0..ch1` of one packed tile. `xt` is the tile's input, `K` rows of `w`
/// floats `xs` apart ([`TileKernel::row_stride`]), `yt` the output of those channels,
/// `ch1 - ch0` rows of `w` floats `ys` apart (channel `ch0`'s row first); `w` is a multiple of
/// [`LANES`], `ys >= w`. Only the first `cnt` columns matter: a kernel may leave output columns
/// `cnt..w` unwritten.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    pub xt: *const f32,
    pub xs: usize,
    pub yt: *mut f32,
    pub w: usize,
    pub ys: usize,
    pub ch0: usize,
    pub ch1: usize,
    pub cnt: usize,
}

// SAFETY: a Tile is only built by `run`, whose jobs read shared immutable input and write
// pairwise disjoint (tile x channel range) regions of the output.
unsafe impl Send for Tile {}
// SAFETY: as above; a Tile is plain data and is never used to create aliasing `&mut`.
unsafe impl Sync for Tile {}

/// A packed weight that computes channels-first tiles.
pub(crate) trait TileKernel: Sync {
    fn k(&self) -> usize;
    fn n(&self) -> usize;
    /// Multiply-adds per output column over all channels.
    fn macs_per_col(&self) -> usize;
    /// Floats between the rows of the packed tiles it reads, `w` wide (at least `w`).
    fn row_stride(&self, w: usize) -> usize {
        w
    }
    /// Splits `0..n` into at most `parts` channel ranges of about equal work.
    fn channel_parts(&self, parts: usize) -> Vec<(usize, usize)>;
    /// Computes one tile.
    ///
    /// # Safety
    /// The tile's pointers must be valid for the extents it names and `isa` supported.
    unsafe fn tile(&self, isa: Isa, t: &Tile);
}

/// `w`, plus a cache line when `w` floats span an even number of lines: rows that many floats
/// apart put a strip of one vector of columns down them on every set of L1 (with `w` = 64, rows
/// 256 bytes apart use a quarter of the sets, so a 256-row strip, 16 KiB, would not stay in a
/// 32 KiB 8-way L1).
pub(crate) fn spread_stride(w: usize) -> usize {
    if (w / LANES).is_multiple_of(2) && w > 0 {
        w + LANES
    } else {
        w
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// One tile of rows: rows `c0..c0 + cnt`, packed `w` wide (a multiple of [`LANES`]).
#[derive(Clone, Copy, Debug)]
struct TileSpec {
    c0: usize,
    cnt: usize,
    w: usize,
}

/// Row-major tiles of at most `w` rows each.
fn row_tiles(cols: usize, w: usize) -> Vec<TileSpec> {
    (0..cols)
        .step_by(w)
        .map(|c0| {
            let cnt = w.min(cols - c0);
            TileSpec { c0, cnt, w: round_up(cnt, LANES) }
        })
        .collect()
}

/// Computes `y = x·W (+ add)` for row-major `x: [rows, K]` and `y`, `add`: `[rows, N]` (slice
/// lengths checked by the caller); channels-first calls run as 1x1 convolutions (`conv`).
pub(crate) fn run<K: TileKernel>(kern: &K, isa: Isa, x: &[f32], rows: usize, add: Option<&[f32]>, y: &mut [f32]) {
    let (k, n) = (kern.k(), kern.n());
    if rows == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // The rows are the columns of the tiles.
    match parallel_split(rows, k, kern.macs_per_col(), n, threads) {
        Some(split) if split.parts > 1 => grid(kern, isa, x, &row_tiles(rows, split.w), split.parts, add, y),
        Some(split) => tiles_in_parallel(kern, isa, x, &row_tiles(rows, split.w), add, y, true),
        None => tiles_in_parallel(kern, isa, x, &row_tiles(rows, COL_TILE), add, y, false),
    }
}

/// Asks for the cache lines of columns `cols` of rows `rows` of the row-major `[_, n]` array `a`
/// (an addend produced long before: its rows come from memory a short run at a time).
fn prefetch_block(a: &[f32], n: usize, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for r in rows {
        let (start, end) = (r * n + cols.start, (r * n + cols.end).min(a.len()));
        let mut i = start;
        while i < end {
            // SAFETY: a prefetch never faults, and the address is inside `a`.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(a.as_ptr().add(i).cast()) };
            i += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, n, rows, cols);
}

/// `dst += src`, element by element.
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// Computes channels `ch0..ch1` of the packed tile `xt` (`K` rows of `w` floats,
/// [`TileKernel::row_stride`] apart, the first `cnt` columns meaningful) a chunk of
/// [`CH_CHUNK`] channels at a time into `buf`, handing each finished chunk (`[c1 - c0][w]`,
/// channels `c0..c1`, columns `cnt..w` unspecified) to `emit`.
pub(crate) fn compute_chunks<K: TileKernel>(
    kern: &K,
    isa: Isa,
    xt: &[f32],
    (w, cnt): (usize, usize),
    (ch0, ch1): (usize, usize),
    buf: &mut [f32],
    mut emit: impl FnMut(usize, usize, &[f32]),
) {
    let mut a = ch0;
    while a < ch1 {
        let b = (a + CH_CHUNK).min(ch1);
        let xs = kern.row_stride(w);
        assert!(xt.len() >= kern.k() * xs && buf.len() >= (b - a) * w, "tile scratch too small");
        let t = Tile { xt: xt.as_ptr(), xs, yt: buf.as_mut_ptr(), w, ys: w, ch0: a, ch1: b, cnt };
        // SAFETY: `xt` holds the tile's K rows of `w` floats and `buf` room for channels a..b.
        unsafe { kern.tile(isa, &t) };
        emit(a, b, &buf[..(b - a) * w]);
        a = b;
    }
}

/// Splits a row-major `y` (`[M, N]`) into the rows of each tile, in tile order.
fn row_pieces<'a, 'b>(specs: &'a [TileSpec], y: &'b mut [f32], n: usize) -> Vec<(&'a TileSpec, &'b mut [f32])> {
    let mut pieces = Vec::with_capacity(specs.len());
    let mut rest = y;
    for s in specs {
        let (head, tail) = rest.split_at_mut(s.cnt * n);
        pieces.push((s, head));
        rest = tail;
    }
    pieces
}

/// Row-major calls, a tile of rows at a time (in parallel when asked, with at least one tile per
/// thread): each job packs its rows, computes every channel a chunk at a time and writes each
/// chunk into its rows of `y` while it is in cache, so a tile never crosses cores, the call has
/// one fork-join and no output tile is laid out whole.
fn tiles_in_parallel<K: TileKernel>(
    kern: &K,
    isa: Isa,
    x: &[f32],
    specs: &[TileSpec],
    add: Option<&[f32]>,
    y: &mut [f32],
    parallel: bool,
) {
    let (k, n) = (kern.k(), kern.n());
    let body = |(s, dst): (&TileSpec, &mut [f32])| {
        let xs = kern.row_stride(s.w);
        with_scratch(k * xs + CH_CHUNK.min(n) * s.w, |buf| {
            let (xt, yt) = buf.split_at_mut(k * xs);
            pack_rows(isa, x, k, s, xt, xs);
            rows_out(kern, isa, xt, s, add, dst, yt);
        })
    };
    if parallel {
        row_pieces(specs, y, n).into_par_iter().for_each(body);
    } else {
        row_pieces(specs, y, n).into_iter().for_each(body);
    }
}

/// Lays rows `s.c0..s.c0 + s.cnt` of the row-major `x` (`[_, k]`) out as the packed tile `xt`
/// (`k` rows of `s.w` floats `xs` apart, padding columns zeroed).
fn pack_rows(isa: Isa, x: &[f32], k: usize, s: &TileSpec, xt: &mut [f32], xs: usize) {
    transpose(isa, &x[s.c0 * k..], s.cnt, k, k, xt, xs);
    zero_padding(xt, s.cnt, s.w, xs);
}

/// Computes every channel of `kern` on the packed tile `xt` a chunk at a time (in `yt`, room for
/// one chunk) and writes each chunk into the tile's rows `dst` of the row-major output, adding
/// the rows' addends while the chunk is in cache.
fn rows_out<K: TileKernel>(
    kern: &K,
    isa: Isa,
    xt: &[f32],
    s: &TileSpec,
    add: Option<&[f32]>,
    dst: &mut [f32],
    yt: &mut [f32],
) {
    let n = kern.n();
    if let Some(add) = add {
        prefetch_block(add, n, s.c0..s.c0 + s.cnt, 0..CH_CHUNK.min(n));
    }
    compute_chunks(kern, isa, xt, (s.w, s.cnt), (0, n), yt, |a, b, chunk| {
        transpose(isa, chunk, b - a, s.cnt, s.w, &mut dst[a..], n);
        if let Some(add) = add {
            // The next chunk's addends come in while it is computed.
            prefetch_block(add, n, s.c0..s.c0 + s.cnt, b..(b + CH_CHUNK).min(n));
            for m in 0..s.cnt {
                let row = (s.c0 + m) * n;
                add_into(&mut dst[m * n + a..m * n + b], &add[row + a..row + b]);
            }
        }
    });
}

/// Row-major `y = second(first(x)) (+ add)` for `x: [rows, K1]`, `y: [rows, N2]` (slice lengths
/// and `first.n() == second.k()` checked by the caller). Each tile of rows goes through both
/// weights with the intermediate kept in the packed layout (`[N1][w]`, in the core's caches)
/// between them, so it is never transposed, written out or read back. With fewer tiles than
/// threads (short inputs) the two run one after the other, each split over output channels.
pub(crate) fn run_chain<A: TileKernel, B: TileKernel>(
    first: &A,
    second: &B,
    isa: Isa,
    x: &[f32],
    rows: usize,
    add: Option<&[f32]>,
    y: &mut [f32],
) {
    let (k1, n1, n2) = (first.k(), first.n(), second.n());
    if rows == 0 || n2 == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let mpc = first.macs_per_col() + second.macs_per_col();
    let split = parallel_split(rows, k1, mpc, n2, threads);
    if split.is_some_and(|s| s.parts > 1) {
        MID.with(|cell| {
            let mut mid = cell.take();
            mid.resize(rows * n1, 0.0);
            run(first, isa, x, rows, None, &mut mid);
            run(second, isa, &mid, rows, add, y);
            cell.set(mid);
        });
        return;
    }
    let (specs, parallel) = (row_tiles(rows, split.map_or(COL_TILE, |s| s.w)), split.is_some());
    let body = |(s, dst): (&TileSpec, &mut [f32])| {
        let (xs, ms) = (first.row_stride(s.w), second.row_stride(s.w));
        with_scratch(k1 * xs + n1 * ms + CH_CHUNK.min(n2) * s.w, |buf| {
            let (xt, rest) = buf.split_at_mut(k1 * xs);
            let (mid, yt) = rest.split_at_mut(n1 * ms);
            pack_rows(isa, x, k1, s, xt, xs);
            let mut a = 0;
            while a < n1 {
                let b = (a + CH_CHUNK).min(n1);
                let t = Tile {
                    xt: xt.as_ptr(),
                    xs,
                    yt: mid[a * ms..].as_mut_ptr(),
                    w: s.w,
                    ys: ms,
                    ch0: a,
                    ch1: b,
                    cnt: s.cnt,
                };
                // SAFETY: `xt` holds the tile's K1 rows of `w` floats and `mid` room for N1 rows.
                unsafe { first.tile(isa, &t) };
                a = b;
            }
            zero_padding(mid, s.cnt, s.w, ms);
            rows_out(second, isa, mid, s, add, dst, yt);
        })
    };
    if parallel {
        row_pieces(&specs, y, n2).into_par_iter().for_each(body);
    } else {
        row_pieces(&specs, y, n2).into_iter().for_each(body);
    }
}

/// How a row-major call is split: tiles of `w` rows (a multiple of [`LANES`]), the output
/// channels of each tile in `parts` ranges of about equal work; one job per (tile, range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    pub w: usize,
    pub parts: usize,
}

/// Cost of packing (transposing) one input float, in multiply-adds at the kernels' speed.
const PACK_COST: f64 = 4.0;
/// Fixed cost of one job (hand-off between threads, per-chunk set-up), in multiply-adds.
const JOB_COST: f64 = 20_000.0;
/// Channels per range at least: narrower ranges spend more on set-up than they compute.
const MIN_PART_CHANNELS: usize = 16;

/// The kernels' speed on a tile `vectors` vectors wide relative to a wide one (the peak bench:
/// one-vector tiles load about as many bytes of weights per multiply-add as they compute).
fn tile_speed(vectors: usize) -> f64 {
    match vectors {
        0 | 1 => 0.8,
        2 => 0.95,
        _ => 1.0,
    }
}

/// Estimated time, in multiply-adds, until the last thread finishes when `rows` rows of `k`
/// input channels (`macs_per_col` multiply-adds each) run split as `s` over `threads` threads:
/// rounds of jobs times the widest job, which packs its tile, computes its share of the
/// channels on the tile's padded width and pays a fixed hand-off cost.
pub(crate) fn split_cost(rows: usize, k: usize, macs_per_col: usize, threads: usize, s: Split) -> f64 {
    let jobs = rows.div_ceil(s.w) * s.parts;
    let rounds = jobs.div_ceil(threads.max(1)) as f64;
    let (cnt, w) = (s.w.min(rows), s.w.min(round_up(rows, LANES)));
    let compute = w as f64 * macs_per_col as f64 / s.parts as f64 / tile_speed(w / LANES);
    rounds * (compute + (cnt * k) as f64 * PACK_COST + JOB_COST)
}

/// How a row-major call of `rows` rows runs on `threads` threads: `None` on the calling thread
/// alone (one thread, or too little work to pay for a fork-join), else the [`plan_rows`] split.
pub(crate) fn parallel_split(rows: usize, k: usize, macs_per_col: usize, n: usize, threads: usize) -> Option<Split> {
    (threads > 1 && macs_per_col.saturating_mul(rows) >= PAR_MIN_MACS)
        .then(|| plan_rows(rows, k, macs_per_col, n, threads))
}

/// The split of a row-major call (`rows` rows, `k` inputs, `n` outputs, `macs_per_col` per row)
/// over `threads` threads with the least [`split_cost`]: tiles of one to four vectors of rows and
/// one to `threads` channel ranges; on a tie the wider tiles and fewer ranges win.
pub(crate) fn plan_rows(rows: usize, k: usize, macs_per_col: usize, n: usize, threads: usize) -> Split {
    let max_parts = threads.min(n / MIN_PART_CHANNELS).max(1);
    let mut best = (f64::INFINITY, Split { w: COL_TILE, parts: 1 });
    for vectors in (1..=COL_TILE / LANES).rev() {
        for parts in 1..=max_parts {
            let s = Split { w: vectors * LANES, parts };
            let cost = split_cost(rows, k, macs_per_col, threads, s);
            if cost < best.0 {
                best = (cost, s);
            }
        }
    }
    // A tile wider than the padded rows is the same tile.
    Split { w: best.1.w.min(round_up(rows, LANES)), ..best.1 }
}

/// Channel ranges per packed tile for `tiles` tiles up to `w` columns wide (channels-first calls,
/// whose tiles are packed beforehand): the count in `1..=threads` whose rounds of jobs, each
/// computing its share of a tile plus a fixed hand-off cost, finish soonest.
pub(crate) fn plan_parts(tiles: usize, w: usize, macs_per_col: usize, n: usize, threads: usize) -> usize {
    let job = |parts: usize| (w * macs_per_col) as f64 / parts as f64 + JOB_COST;
    let cost = |parts: usize| (tiles * parts).div_ceil(threads.max(1)) as f64 * job(parts);
    let max_parts = threads.min(n / MIN_PART_CHANNELS).max(1);
    (1..=max_parts).fold(1, |best, p| if cost(p) < cost(best) { p } else { best })
}

/// Row-major calls split over tiles of rows and ranges of output channels, one job per pair:
/// each job packs its tile (small), computes its channels a chunk at a time — so it streams only
/// its share of the weights — and writes those columns of its rows of `y` directly.
fn grid<K: TileKernel>(
    kern: &K,
    isa: Isa,
    x: &[f32],
    specs: &[TileSpec],
    parts: usize,
    add: Option<&[f32]>,
    y: &mut [f32],
) {
    let (k, n) = (kern.k(), kern.n());
    let ranges = kern.channel_parts(parts);
    let jobs: Vec<(&TileSpec, (usize, usize))> =
        specs.iter().flat_map(|s| ranges.iter().map(move |&r| (s, r))).collect();
    let out = OutPtr(y.as_mut_ptr());
    jobs.par_iter().for_each(|&(s, (ch0, ch1))| {
        let chunk = CH_CHUNK.min(ch1 - ch0);
        let xs = kern.row_stride(s.w);
        with_scratch(k * xs + chunk * s.w + s.cnt * chunk, |buf| {
            let (xt, rest) = buf.split_at_mut(k * xs);
            let (yt, rows) = rest.split_at_mut(chunk * s.w);
            pack_rows(isa, x, k, s, xt, xs);
            compute_chunks(kern, isa, xt, (s.w, s.cnt), (ch0, ch1), yt, |a, b, done| {
                // These channels back to rows (SIMD transpose), then one copy per row.
                let width = b - a;
                transpose(isa, done, width, s.cnt, s.w, rows, width);
                for (m, src) in rows.chunks_exact_mut(width).take(s.cnt).enumerate() {
                    if let Some(add) = add {
                        let row = (s.c0 + m) * n;
                        add_into(src, &add[row + a..row + b]);
                    }
                    // SAFETY: the row's channels a..b lie inside y ((c0 + m) * N + b <= M * N);
                    // jobs write disjoint (rows, channels) blocks, and `rows` is this thread's scratch.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.at((s.c0 + m) * n + a), width) };
                }
            });
        })
    });
}

/// An output slice's base pointer, shared by parallel jobs that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

impl OutPtr {
    /// # Safety
    /// `i` must be within the slice the pointer was taken from.
    pub(crate) unsafe fn at(&self, i: usize) -> *mut f32 {
        // SAFETY: forwarded to the caller.
        unsafe { self.0.add(i) }
    }
}
// SAFETY: used only by jobs that write disjoint blocks of the output (`grid`, `conv::run_conv`,
// `softmax_axis`), each inside the slice the pointer was taken from.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Zeroes columns `cnt..w` of a packed tile (rows `xs` apart): the scratch it lives in may hold
/// anything (subnormal floats among it would slow every multiply-add that reads them).
pub(crate) fn zero_padding(tile: &mut [f32], cnt: usize, w: usize, xs: usize) {
    if cnt < w {
        for row in tile.chunks_exact_mut(xs) {
            row[cnt..w].fill(0.0);
        }
    }
}

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The intermediate of a chain run as two calls, kept between calls.
    static MID: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Floats per 64-byte cache line: scratch buffers start on a line so no vector load splits one.
const LINE_FLOATS: usize = 16;

/// Runs `f` on a per-thread, cache-line-aligned buffer of `len` floats, reused across calls (a
/// re-entrant call on the same thread gets a fresh one). Its contents are unspecified but
/// initialized.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(Cell::take);
    if buf.len() < len + LINE_FLOATS {
        buf.resize(len + LINE_FLOATS, 0.0);
    }
    let skip = buf.as_ptr().align_offset(4 * LINE_FLOATS).min(LINE_FLOATS);
    let r = f(&mut buf[skip..skip + len]);
    SCRATCH.with(|c| {
        let other = c.take();
        c.set(if other.len() > buf.len() { other } else { buf });
    });
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    /// BERT-base's 768x768 projection at 90% sparsity: nonzeros plus the bias per row.
    const MPC: usize = 768 * 768 / 10 + 768;

    fn jobs(rows: usize, s: Split) -> usize {
        rows.div_ceil(s.w) * s.parts
    }

    #[test]
    fn work_runs_in_parallel_from_half_a_million_multiply_adds() {
        for rows in [128, 2048, 20] {
            assert!(parallel_split(rows, 768, MPC, 768, 2).is_some(), "{rows} rows");
        }
        assert_eq!(parallel_split(2048, 768, MPC, 768, 1), None);
        assert_eq!(parallel_split(4, 64, 64 * 64, 64, 2), None);
        assert_eq!(parallel_split(2048, 768, MPC, 768, 2), Some(Split { w: 64, parts: 1 }));
    }

    #[test]
    fn two_threads_split_long_inputs_by_rows_and_short_ones_by_channels() {
        assert_eq!(plan_rows(128, 768, MPC, 768, 2), Split { w: 64, parts: 1 });
        assert_eq!(plan_rows(2048, 768, MPC, 768, 2), Split { w: 64, parts: 1 });
        assert_eq!(plan_rows(20, 768, MPC, 768, 2), Split { w: 32, parts: 2 });
        assert_eq!(plan_rows(1, 768, MPC, 768, 2), Split { w: 16, parts: 2 });
    }

    #[test]
    fn many_threads_on_few_rows_get_a_grid_that_keeps_every_thread_busy() {
        for rows in [64, 100, 128, 200] {
            let s = plan_rows(rows, 768, MPC, 768, 16);
            // One round of jobs that leaves at most a few threads idle.
            assert!(s.parts > 1 && (12..=16).contains(&jobs(rows, s)), "{rows} rows: {s:?}");
        }
        // A 128-token sequence: 4x4 jobs of 32 rows by a quarter of the channels.
        assert_eq!(plan_rows(128, 768, MPC, 768, 16), Split { w: 32, parts: 4 });
        // Enough rows for every thread: whole tiles, no channel split.
        assert_eq!(plan_rows(64 * 128, 768, MPC, 768, 16), Split { w: 64, parts: 1 });
    }

    #[test]
    fn channels_first_tiles_are_split_only_when_threads_would_idle() {
        // 2 threads: one tile is split in two; an even count of tiles is not split; three tiles
        // become six half-tile jobs (three rounds, 1.5 tiles' time) rather than two rounds of
        // whole tiles (2 tiles' time).
        assert_eq!(plan_parts(1, 64, MPC, 768, 2), 2);
        assert_eq!(plan_parts(4, 64, MPC, 768, 2), 1);
        assert_eq!(plan_parts(3, 64, MPC, 768, 2), 2);
        // Small work is not split finer than it pays: 24 output channels never split.
        assert_eq!(plan_parts(1, 16, 64 * 24, 24, 16), 1);
        for threads in [2, 4, 16] {
            for tiles in [1, 2, 3, 5, 16, 40, 64] {
                let p = plan_parts(tiles, 64, MPC, 768, threads);
                assert!((1..=threads).contains(&p), "{tiles} tiles on {threads} threads: {p}");
                if tiles % threads == 0 {
                    assert_eq!(p, 1, "{tiles} tiles on {threads} threads");
                }
                if tiles < threads {
                    // At most a quarter of the threads idle (15 jobs of a fifth of a tile beat
                    // 18 of a sixth, which take two rounds).
                    assert!(
                        4 * tiles * p >= 3 * threads,
                        "{tiles} tiles on {threads} threads: {p} leaves threads idle"
                    );
                }
            }
        }
    }

    #[test]
    fn the_plan_is_the_cheapest_candidate_and_never_splits_narrow_outputs_finely() {
        for threads in [2, 3, 4, 8, 16, 64] {
            for rows in [1, 5, 16, 17, 33, 64, 100, 128, 129, 500, 4096] {
                for (k, n, mpc) in [(768, 768, MPC), (768, 3072, 4 * MPC), (64, 24, 64 * 24), (3072, 768, 4 * MPC)] {
                    let s = plan_rows(rows, k, mpc, n, threads);
                    assert!(s.w / LANES * LANES == s.w && s.w <= COL_TILE && s.parts >= 1, "{s:?}");
                    assert!(s.parts <= threads && (s.parts == 1 || n / s.parts >= MIN_PART_CHANNELS), "{s:?}");
                    let cost = split_cost(rows, k, mpc, threads, s);
                    for v in 1..=COL_TILE / LANES {
                        for parts in 1..=threads.min(n / MIN_PART_CHANNELS).max(1) {
                            let other = Split { w: v * LANES, parts };
                            assert!(cost <= split_cost(rows, k, mpc, threads, other), "{s:?} vs {other:?}");
                        }
                    }
                }
            }
        }
    }
}
