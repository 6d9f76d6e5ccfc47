//! Dense weights: packed into panels of a few output channels (the width of this CPU's
//! micro-kernel), computed with a register-blocked micro-kernel over channels-first activations,
//! a block of input channels at a time so the activations it reads stay in L1.

use crate::exec::{balanced_parts, Tile, TileKernel};
use crate::isa::Isa;
use crate::simd::{Portable, Simd, LANES};
use crate::Epilogue;

/// Output channels per packed panel for micro-kernels of `isa`: six on AVX2 (6 channels x 16
/// columns = 12 of the 16 `ymm` registers of sums, beside two of activations and a broadcast
/// weight), eight elsewhere.
pub fn dense_panel(isa: Isa) -> usize {
    match isa {
        Isa::Avx2 => 6,
        _ => 8,
    }
}

/// A constant `[K, N]` weight packed densely as `[ceil(N / panel)][K][panel]`.
#[derive(Debug, Clone)]
pub struct DenseMatrix {
    k: usize,
    n: usize,
    /// Output channels per panel (see [`dense_panel`]).
    panel: usize,
    panels: Vec<f32>,
    epi: Epilogue,
    /// Bias padded to a whole number of panels.
    bias: Vec<f32>,
}

impl DenseMatrix {
    /// Packs `w(k, n)` for `k < K`, `n < N` in panels for this CPU's best micro-kernel.
    pub fn from_fn(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, epi: Epilogue) -> DenseMatrix {
        Self::with_panel(k, n, w, epi, dense_panel(Isa::best()))
    }

    /// As [`DenseMatrix::from_fn`] with `panel` output channels per panel (6 or 8; any other
    /// count is taken as 8). Every ISA computes either.
    pub fn with_panel(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, epi: Epilogue, panel: usize) -> DenseMatrix {
        let panel = if panel == 6 { 6 } else { 8 };
        let np = n.div_ceil(panel);
        let mut panels = vec![0f32; np * k * panel];
        for p in 0..np {
            for r in 0..k {
                for j in 0..panel {
                    let c = p * panel + j;
                    if c < n {
                        panels[(p * k + r) * panel + j] = w(r, c);
                    }
                }
            }
        }
        // Slack so the leftover-column path may read a whole vector from any row.
        panels.resize(np * k * panel + LANES, 0.0);
        let mut bias = epi.bias_or_zeros(n);
        bias.resize(np * panel, 0.0);
        DenseMatrix { k, n, panel, panels, epi, bias }
    }

    /// The weights of `parts` side by side (`[K, N1 + N2 + ...]`) as one matrix, or `None`
    /// unless they share `K` and everything but the bias in their epilogue.
    pub fn concat_n(parts: &[&DenseMatrix]) -> Option<DenseMatrix> {
        let first = parts.first()?;
        let same = |m: &&DenseMatrix| {
            m.k == first.k
                && m.panel == first.panel
                && m.epi.act == first.epi.act
                && m.epi.min == first.epi.min
                && m.epi.max == first.epi.max
        };
        if !parts.iter().all(same) {
            return None;
        }
        let mut owner = vec![];
        for (i, m) in parts.iter().enumerate() {
            owner.extend((0..m.n).map(|c| (i, c)));
        }
        let has_bias = parts.iter().any(|m| m.epi.bias.is_some());
        let bias: Vec<f32> = parts.iter().flat_map(|m| m.bias[..m.n].iter().copied()).collect();
        let epi = Epilogue { bias: has_bias.then_some(bias), ..first.epi.clone() };
        let w = |r: usize, c: usize| parts[owner[c].0].weight(r, owner[c].1);
        Some(DenseMatrix::with_panel(first.k, owner.len(), w, epi, first.panel))
    }

    /// The weight at input channel `r`, output channel `c`.
    fn weight(&self, r: usize, c: usize) -> f32 {
        self.panels[((c / self.panel) * self.k + r) * self.panel + c % self.panel]
    }

    /// Input channels.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }
    /// The epilogue applied on the way out.
    pub fn epilogue(&self) -> &Epilogue {
        &self.epi
    }
    /// Bytes held by the packed weight.
    pub fn packed_bytes(&self) -> usize {
        4 * (self.panels.len() + self.bias.len())
    }

    /// `y = x·W` (+ epilogue, + `add`) for `x: [outer, K, inner]`, `y: [outer, N, inner]`.
    pub(crate) fn run(&self, isa: Isa, x: &[f32], rows: usize, add: Option<&[f32]>, y: &mut [f32]) {
        crate::exec::run(self, isa, x, rows, add, y)
    }
}

impl TileKernel for DenseMatrix {
    fn k(&self) -> usize {
        self.k
    }
    fn n(&self) -> usize {
        self.n
    }
    fn macs_per_col(&self) -> usize {
        self.k * self.n + self.n
    }
    fn row_stride(&self, w: usize) -> usize {
        crate::exec::spread_stride(w)
    }
    fn channel_parts(&self, parts: usize) -> Vec<(usize, usize)> {
        let prefix: Vec<usize> = (0..=self.n).collect();
        balanced_parts(&prefix, parts, self.panel)
    }
    unsafe fn tile(&self, isa: Isa, t: &Tile) {
        let six = self.panel == 6;
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked the CPU supports `isa`; tile pointers are valid (caller).
            Isa::Avx512 => unsafe { tile_avx512(self, t, six) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { tile_avx2(self, t, six) },
            // SAFETY: tile pointers are valid (caller).
            _ if six => unsafe { dense_tile::<Portable, 6, 1, false>(self, t) },
            // SAFETY: as above.
            _ => unsafe { dense_tile::<Portable, 8, 1, false>(self, t) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(m: &DenseMatrix, t: &Tile, six: bool) {
    // SAFETY: avx512f enabled here; tile contract forwarded; NR divides the panel.
    unsafe {
        if six {
            dense_tile::<crate::simd::Avx512, 6, 2, false>(m, t)
        } else {
            dense_tile::<crate::simd::Avx512, 8, 2, false>(m, t)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(m: &DenseMatrix, t: &Tile, six: bool) {
    // SAFETY: avx2+fma enabled here; tile contract forwarded; NR divides the panel (an
    // eight-channel panel runs as two halves of four).
    unsafe {
        if six {
            dense_tile::<crate::simd::Avx2, 6, 1, true>(m, t)
        } else {
            dense_tile::<crate::simd::Avx2, 4, 1, true>(m, t)
        }
    }
}

/// Input channels per block for strips of `strip` columns: a block of the strip fills half of L1,
/// so it is read from L1 by every channel of the chunk (measured on a 32 KiB-L1 AMD EPYC at 128
/// rows: 256 rows 79% of the FMA peak, 96-128 rows 77%, 48 rows 71%, unblocked K = 3072 53%).
fn block_rows(strip: usize) -> usize {
    (crate::cache::l1d_bytes() / 2 / (4 * strip)).clamp(32, 1024)
}

/// Meaningful columns past the last whole vector of a tile, at most, that are computed a column
/// at a time over the channels ([`leftover`]) rather than as one more vector of columns: a
/// 49-pixel tile (a 7x7 image) then costs 49 columns, not 64.
const LEFTOVER_MAX: usize = 8;

/// Computes a tile a block of input channels at a time (the first starts from the bias, later
/// ones from the partial sums in the output, the last applies the activation and clamp);
/// within a block, a strip of `CB` vectors of columns (then one) at a time, and within a strip
/// every channel `NR` at a time, so the strip's block stays in L1 while the weights stream past
/// it; up to [`LEFTOVER_MAX`] meaningful columns past the last whole vector go through
/// [`leftover`], or with `NARROW` (AVX2 only), from [`NARROW_MIN`] of them on, through
/// [`narrow_avx2`]. Channel ranges start on panel boundaries (see `channel_parts`); `NR`
/// divides the panel.
#[inline(always)]
unsafe fn dense_tile<S: Simd, const NR: usize, const CB: usize, const NARROW: bool>(m: &DenseMatrix, t: &Tile) {
    let width = CB * LANES;
    let kc = block_rows(width);
    let tail = t.cnt % LANES;
    let strips_end = if tail > 0 && tail <= LEFTOVER_MAX { t.cnt - tail } else { t.w };
    let mut k0 = 0;
    loop {
        let k1 = (k0 + kc).min(m.k);
        if strips_end < t.w {
            // SAFETY: columns strips_end..cnt lie inside the tile; rows k0..k1 inside K; with
            // NARROW the caller is an AVX2 context, and strips_end + 8 <= w (w is a multiple of
            // LANES past the last whole strip).
            unsafe {
                if NARROW && t.cnt - strips_end >= NARROW_MIN {
                    #[cfg(target_arch = "x86_64")]
                    narrow_avx2(m, t, strips_end, (k0, k1));
                } else {
                    leftover::<S>(m, t, (strips_end, t.cnt), (k0, k1));
                }
            }
        }
        let mut c = 0;
        while c < strips_end {
            let wide = c + width <= strips_end;
            let mut ch = t.ch0;
            while ch < t.ch1 {
                let b = Block { ch, valid: NR.min(t.ch1 - ch), c, k0, k1 };
                // SAFETY: ch is NR-aligned inside the range; columns and rows are inside the tile.
                unsafe {
                    if wide {
                        dense_block::<S, NR, CB>(m, t, &b)
                    } else {
                        dense_block::<S, NR, 1>(m, t, &b)
                    }
                }
                ch += NR;
            }
            c += if wide { width } else { LANES };
        }
        if k1 == m.k {
            break;
        }
        k0 = k1;
    }
}

/// Leftover columns from which [`narrow_avx2`] beats [`leftover`]: below it, `leftover`'s
/// vectors of weights cover fewer multiply-adds than eight lanes of mostly idle columns.
const NARROW_MIN: usize = 2;

/// Columns `c0..c0 + 8` of the tile (the meaningful ones first; the rest, inside the tile's
/// width, are computed and ignored) for every channel of its range, input channels `k0..k1`,
/// on AVX2: the eight columns of an input row are one vector and each weight is broadcast, one
/// vector of sums per channel, twelve channels (two six-channel panels) or eight at a time.
/// Row-major calls of at most 8 rows run entirely here.
///
/// # Safety
/// The tile's pointers must be valid for its extents, `c0 + 8 <= t.w`, `k1 <= K`, and the CPU
/// must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_avx2(m: &DenseMatrix, t: &Tile, c0: usize, ks: (usize, usize)) {
    let mut ch = t.ch0;
    while ch < t.ch1 {
        let left = t.ch1 - ch;
        // SAFETY: `ch` is on a panel boundary (channel ranges are) and the panels read hold
        // channels up to ch1 (a second panel only when more than one panel's channels remain);
        // the rest is the caller's.
        unsafe {
            match m.panel {
                6 if left > 6 => narrow_group::<6, 2>(m, t, (c0, ch, left.min(12)), ks),
                6 => narrow_group::<6, 1>(m, t, (c0, ch, left), ks),
                _ => narrow_group::<8, 1>(m, t, (c0, ch, left.min(8)), ks),
            }
        }
        ch += if m.panel == 6 { 12 } else { 8 };
    }
}

/// Channels `ch..ch + valid` (`NP` whole panels of `P` from `ch`) of [`narrow_avx2`]'s columns.
///
/// # Safety
/// As [`narrow_avx2`]; panels `ch / P..ch / P + NP` exist and `valid <= NP * P`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn narrow_group<const P: usize, const NP: usize>(
    m: &DenseMatrix,
    t: &Tile,
    (c0, ch, valid): (usize, usize, usize),
    (k0, k1): (usize, usize),
) {
    use crate::simd::Avx2;
    use std::arch::x86_64::*;
    let (first, last) = (k0 == 0, k1 == m.k);
    // SAFETY: the panels hold K rows of P floats each; the bias is padded to whole panels;
    // output rows ch - ch0 .. + valid and input rows k0..k1 hold columns c0..c0 + 8 (caller).
    unsafe {
        let wp = m.panels.as_ptr().add((ch / P) * m.k * P);
        let out = t.yt.add((ch - t.ch0) * t.ys + c0);
        let mut acc = [[_mm256_setzero_ps(); P]; NP];
        for (q, panel) in acc.iter_mut().enumerate() {
            for (r, a) in panel.iter_mut().enumerate() {
                let i = q * P + r;
                if first {
                    *a = _mm256_set1_ps(*m.bias.get_unchecked(ch + i));
                } else if i < valid {
                    *a = _mm256_loadu_ps(out.add(i * t.ys));
                }
            }
        }
        let xp = t.xt.add(c0);
        for kk in k0..k1 {
            let x = _mm256_loadu_ps(xp.add(kk * t.xs));
            for (q, panel) in acc.iter_mut().enumerate() {
                let w = wp.add(q * m.k * P + kk * P);
                for (r, a) in panel.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*w.add(r)), x, *a);
                }
            }
        }
        let clamp = last && m.epi.clamps();
        let act = if last { m.epi.act } else { crate::Activation::None };
        let (lo, hi) = (Avx2::splat(m.epi.min), Avx2::splat(m.epi.max));
        // Channels two at a time (P is even), as one 16-lane vector for the activation.
        for i in (0..P * NP).step_by(2) {
            let pair = [acc[i / P][i % P], acc[i / P][i % P + 1]];
            let v = crate::simd::activate::<Avx2>(act, pair);
            let v = if clamp { Avx2::min(Avx2::max(v, lo), hi) } else { v };
            for (h, half) in v.iter().enumerate() {
                if i + h < valid {
                    _mm256_storeu_ps(out.add((i + h) * t.ys), *half);
                }
            }
        }
    }
}

/// Columns `c0..c1` (at most [`LEFTOVER_MAX`]) of the tile for every channel of its range,
/// input channels `k0..k1`, with the column count fixed at compile time so the sums stay in
/// registers.
///
/// # Safety
/// As [`leftover_cols`].
#[inline(always)]
unsafe fn leftover<S: Simd>(m: &DenseMatrix, t: &Tile, (c0, c1): (usize, usize), ks: (usize, usize)) {
    // SAFETY: forwarded.
    unsafe {
        match c1 - c0 {
            1 => leftover_cols::<S, 1>(m, t, c0, ks),
            2 => leftover_cols::<S, 2>(m, t, c0, ks),
            3 => leftover_cols::<S, 3>(m, t, c0, ks),
            4 => leftover_cols::<S, 4>(m, t, c0, ks),
            5 => leftover_cols::<S, 5>(m, t, c0, ks),
            6 => leftover_cols::<S, 6>(m, t, c0, ks),
            7 => leftover_cols::<S, 7>(m, t, c0, ks),
            _ => leftover_cols::<S, 8>(m, t, c0, ks),
        }
    }
}

/// Columns `c0..c0 + J` of the tile for every channel of its range, input channels `k0..k1`:
/// per panel, a vector loaded at each row of the panel (its channels first; the lanes past
/// them, read from the following rows, are ignored) times each column's input, `J` vector sums
/// in registers, split over independent sets of rows when `J` is small so several
/// multiply-adds are in flight; bias, partial sums and epilogue as in the micro-kernel.
///
/// # Safety
/// The tile's pointers must be valid for its extents; `c0 + J <= t.cnt`, `k1 <= K`; `S`
/// supported by this CPU.
#[inline(always)]
unsafe fn leftover_cols<S: Simd, const J: usize>(m: &DenseMatrix, t: &Tile, c0: usize, (k0, k1): (usize, usize)) {
    let (first, last) = (k0 == 0, k1 == m.k);
    let sets = (4 / J).max(1);
    let mut ch = t.ch0;
    while ch < t.ch1 {
        let (p, sub) = (ch / m.panel, ch % m.panel);
        let valid = (m.panel - sub).min(t.ch1 - ch);
        // SAFETY: output rows ch..ch + valid of the tile hold columns c0..c0 + J; panel rows
        // k0..k1 plus a vector lie inside `panels` (its slack covers the last row); input rows
        // k0..k1 hold the columns; `S` is the caller's.
        unsafe {
            let mut init = [[0f32; LANES]; J];
            for (j, col) in init.iter_mut().enumerate() {
                for (r, a) in col.iter_mut().enumerate().take(valid) {
                    let out = t.yt.add((ch - t.ch0 + r) * t.ys + c0 + j);
                    *a = if first { *m.bias.get_unchecked(ch + r) } else { *out };
                }
            }
            let mut acc = [[S::zero(); J]; 4];
            for (a, col) in acc[0].iter_mut().zip(&init) {
                *a = S::load(col.as_ptr());
            }
            let wp = m.panels.as_ptr().add(p * m.k * m.panel + sub);
            let mut kk = k0;
            while kk + sets <= k1 {
                for (u, set) in acc.iter_mut().enumerate().take(sets) {
                    let w = S::load(wp.add((kk + u) * m.panel));
                    let x = t.xt.add((kk + u) * t.xs + c0);
                    for (j, a) in set.iter_mut().enumerate() {
                        *a = S::fmadd(w, S::splat(*x.add(j)), *a);
                    }
                }
                kk += sets;
            }
            for kk in kk..k1 {
                let w = S::load(wp.add(kk * m.panel));
                let x = t.xt.add(kk * t.xs + c0);
                for (j, a) in acc[0].iter_mut().enumerate() {
                    *a = S::fmadd(w, S::splat(*x.add(j)), *a);
                }
            }
            let (head, rest) = acc.split_at_mut(1);
            for set in rest.iter().take(sets - 1) {
                for (d, v) in head[0].iter_mut().zip(set) {
                    *d = S::add(*d, *v);
                }
            }
            let mut sums = [0f32; LANES];
            for (j, a) in head[0].iter().enumerate() {
                S::store(sums.as_mut_ptr(), *a);
                for (r, v) in sums.iter().enumerate().take(valid) {
                    let v = if last { m.epi.apply(*v) } else { *v };
                    *t.yt.add((ch - t.ch0 + r) * t.ys + c0 + j) = v;
                }
            }
        }
        ch += valid;
    }
}

/// One micro-kernel call: channels `ch..ch + valid` (inside one panel, `valid <= NR`) over the
/// columns at `c`, input channels `k0..k1`.
struct Block {
    ch: usize,
    valid: usize,
    c: usize,
    k0: usize,
    k1: usize,
}

#[inline(always)]
unsafe fn dense_block<S: Simd, const NR: usize, const CB: usize>(m: &DenseMatrix, t: &Tile, b: &Block) {
    let (p, sub) = (b.ch / m.panel, b.ch % m.panel);
    let (first, last) = (b.k0 == 0, b.k1 == m.k);
    // SAFETY: panel p has K rows of `panel` floats; sub + NR <= panel since NR divides the panel
    // and ch is NR-aligned; bias is padded to whole panels; the tile covers K rows of xt and the
    // channels' rows of yt (only `valid` rows are loaded and stored).
    unsafe {
        let wp = m.panels.as_ptr().add(p * m.k * m.panel + sub);
        let xp = t.xt.add(b.c);
        let out = t.yt.add((b.ch - t.ch0) * t.ys + b.c);
        let mut acc = [[S::zero(); CB]; NR];
        for (r, row) in acc.iter_mut().enumerate() {
            if first {
                *row = [S::splat(*m.bias.get_unchecked(b.ch + r)); CB];
            } else if r < b.valid {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = S::load(out.add(r * t.ys + v * LANES));
                }
            }
        }
        for kk in b.k0..b.k1 {
            let xr = xp.add(kk * t.xs);
            let mut xs = [S::zero(); CB];
            for (v, x) in xs.iter_mut().enumerate() {
                *x = S::load(xr.add(v * LANES));
            }
            let w = wp.add(kk * m.panel);
            for (r, row) in acc.iter_mut().enumerate() {
                let wr = S::splat(*w.add(r));
                for v in 0..CB {
                    row[v] = S::fmadd(wr, xs[v], row[v]);
                }
            }
        }
        let clamp = last && m.epi.clamps();
        let act = if last { m.epi.act } else { crate::Activation::None };
        let (lo, hi) = (S::splat(m.epi.min), S::splat(m.epi.max));
        for (r, row) in acc.iter().enumerate().take(b.valid) {
            for (v, &a) in row.iter().enumerate() {
                let a = crate::simd::activate::<S>(act, a);
                let a = if clamp { S::min(S::max(a, lo), hi) } else { a };
                S::store(out.add(r * t.ys + v * LANES), a);
            }
        }
    }
}
