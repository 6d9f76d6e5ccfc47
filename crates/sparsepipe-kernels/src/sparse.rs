//! Sparse weights, computed XNNPACK-style: each nonzero is one broadcast weight times a
//! contiguous run of tokens. The nonzeros are stored in the order the kernel walks them — by
//! block of input channels (a block of the packed activation tile stays in the core's caches),
//! then by output channel — with one-byte row offsets inside the block, so the inner loop loads a
//! weight, a byte and the activation rows, and multiplies nothing but the FMAs.

use crate::exec::{balanced_parts, Tile, TileKernel};
use crate::isa::Isa;
use crate::simd::{Portable, Simd, LANES};
use crate::Epilogue;

/// A constant `[K, N]` weight with its zeros removed, stored in traversal order.
#[derive(Debug, Clone)]
pub struct SparseMatrix {
    k: usize,
    n: usize,
    /// Input channels per cache block (at most 256, so a row offset fits a byte).
    kblock: usize,
    nkb: usize,
    /// `ptr[b * N + c]..ptr[b * N + c + 1]`: channel `c`'s nonzeros among block `b`'s input channels.
    ptr: Vec<u32>,
    /// Input channel of each nonzero, relative to its block's first.
    rows: Vec<u8>,
    vals: Vec<f32>,
    /// `work[c]`: nonzeros of channels `0..c` plus a fixed cost per channel, for balanced splits.
    work: Vec<usize>,
    epi: Epilogue,
    bias: Vec<f32>,
}

/// The largest block: row offsets are stored in one byte.
const MAX_KBLOCK: usize = 256;

/// Input channels per block for this CPU. Measured with `cargo bench --bench peak` (`KBLOCK=`):
/// on a 48 KiB-L1, 2 MiB-L2 Xeon, BERT-base shapes at 90% run 15-20% faster with 256-channel
/// blocks (64 KiB of a 64-column tile, served from L1 and L2) than with blocks that fit half of
/// L1, whose extra partial-sum loads and stores cost more than the misses they save; unblocked
/// (K = 3072) is slower again. CPUs with an L1 under 32 KiB get 128.
pub fn default_kblock() -> usize {
    if crate::cache::l1d_bytes() >= 32 * 1024 {
        MAX_KBLOCK
    } else {
        MAX_KBLOCK / 2
    }
}

impl SparseMatrix {
    /// Packs `w(k, n)` for `k < K`, `n < N`, keeping the nonzeros, with blocks sized for this CPU.
    ///
    /// # Panics
    /// If the weight has 2^32 or more nonzeros.
    pub fn from_fn(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, epi: Epilogue) -> SparseMatrix {
        Self::with_kblock(k, n, w, epi, default_kblock())
    }

    /// As [`SparseMatrix::from_fn`] with `kblock` input channels per block (clamped to `1..=256`).
    ///
    /// # Panics
    /// If the weight has 2^32 or more nonzeros.
    pub fn with_kblock(
        k: usize,
        n: usize,
        w: impl Fn(usize, usize) -> f32,
        epi: Epilogue,
        kblock: usize,
    ) -> SparseMatrix {
        let kblock = kblock.clamp(1, MAX_KBLOCK);
        let nkb = k.div_ceil(kblock).max(1);
        let mut ptr = Vec::with_capacity(nkb * n + 1);
        let mut rows = Vec::new();
        let mut vals = Vec::new();
        let mut per_channel = vec![0usize; n];
        for b in 0..nkb {
            let (r0, r1) = (b * kblock, ((b + 1) * kblock).min(k));
            for (c, count) in per_channel.iter_mut().enumerate() {
                ptr.push(u32::try_from(vals.len()).expect("too many nonzeros for a sparse weight"));
                for r in r0..r1 {
                    let v = w(r, c);
                    if v != 0.0 {
                        rows.push((r - r0) as u8);
                        vals.push(v);
                        *count += 1;
                    }
                }
            }
        }
        ptr.push(u32::try_from(vals.len()).expect("too many nonzeros for a sparse weight"));
        let mut work = Vec::with_capacity(n + 1);
        work.push(0);
        for (c, count) in per_channel.iter().enumerate() {
            work.push(work[c] + count + 4 * nkb);
        }
        let bias = epi.bias_or_zeros(n);
        SparseMatrix { k, n, kblock, nkb, ptr, rows, vals, work, epi, bias }
    }

    /// The weights of `parts` side by side (`[K, N1 + N2 + ...]`) as one matrix computing the same
    /// sums in the same order, or `None` unless they share `K`, block size and everything but
    /// the bias in their epilogue.
    pub fn concat_n(parts: &[&SparseMatrix]) -> Option<SparseMatrix> {
        let first = parts.first()?;
        let same = |m: &&SparseMatrix| {
            m.k == first.k
                && m.kblock == first.kblock
                && m.epi.act == first.epi.act
                && m.epi.min == first.epi.min
                && m.epi.max == first.epi.max
        };
        if !parts.iter().all(same) {
            return None;
        }
        let (k, kblock, nkb) = (first.k, first.kblock, first.nkb);
        let n: usize = parts.iter().map(|m| m.n).sum();
        let nnz: usize = parts.iter().map(|m| m.nnz()).sum();
        u32::try_from(nnz).ok()?;
        let mut ptr = Vec::with_capacity(nkb * n + 1);
        let (mut rows, mut vals) = (Vec::with_capacity(nnz), Vec::with_capacity(nnz));
        for b in 0..nkb {
            for m in parts {
                for c in 0..m.n {
                    ptr.push(vals.len() as u32);
                    let (s, e) = (m.ptr[b * m.n + c] as usize, m.ptr[b * m.n + c + 1] as usize);
                    rows.extend_from_slice(&m.rows[s..e]);
                    vals.extend_from_slice(&m.vals[s..e]);
                }
            }
        }
        ptr.push(vals.len() as u32);
        let mut work = Vec::with_capacity(n + 1);
        work.push(0);
        for m in parts {
            let base = *work.last().unwrap_or(&0);
            work.extend(m.work[1..].iter().map(|w| base + w));
        }
        let bias: Vec<f32> = parts.iter().flat_map(|m| m.bias.iter().copied()).collect();
        let has_bias = parts.iter().any(|m| m.epi.bias.is_some());
        let epi = Epilogue { bias: has_bias.then(|| bias.clone()), ..first.epi.clone() };
        Some(SparseMatrix { k, n, kblock, nkb, ptr, rows, vals, work, epi, bias })
    }

    /// Input channels.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Stored nonzeros.
    pub fn nnz(&self) -> usize {
        self.vals.len()
    }
    /// Input channels per cache block.
    pub fn kblock(&self) -> usize {
        self.kblock
    }
    /// The epilogue applied on the way out.
    pub fn epilogue(&self) -> &Epilogue {
        &self.epi
    }
    /// Bytes held by the packed weight.
    pub fn packed_bytes(&self) -> usize {
        4 * (self.ptr.len() + self.vals.len() + self.bias.len()) + self.rows.len() + 8 * self.work.len()
    }

    /// `y = x·W` (+ epilogue, + `add`) for `x: [outer, K, inner]`, `y: [outer, N, inner]`.
    pub(crate) fn run(&self, isa: Isa, x: &[f32], rows: usize, add: Option<&[f32]>, y: &mut [f32]) {
        crate::exec::run(self, isa, x, rows, add, y)
    }
}

impl TileKernel for SparseMatrix {
    fn k(&self) -> usize {
        self.k
    }
    fn n(&self) -> usize {
        self.n
    }
    fn macs_per_col(&self) -> usize {
        self.vals.len() + self.n
    }
    fn channel_parts(&self, parts: usize) -> Vec<(usize, usize)> {
        balanced_parts(&self.work, parts, 1)
    }
    unsafe fn tile(&self, isa: Isa, t: &Tile) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked the CPU supports `isa`; tile pointers are valid (caller).
            Isa::Avx512 => unsafe { tile_avx512(self, t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { tile_avx2(self, t) },
            // SAFETY: tile pointers are valid (caller).
            _ => unsafe { tile_width::<Portable>(self, t) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(m: &SparseMatrix, t: &Tile) {
    // SAFETY: avx512f enabled here; tile contract forwarded.
    unsafe { tile_width::<crate::simd::Avx512>(m, t) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(m: &SparseMatrix, t: &Tile) {
    // SAFETY: avx2+fma enabled here; tile contract forwarded.
    unsafe { tile_width::<crate::simd::Avx2>(m, t) }
}

/// Picks the kernel compiled for the tile's width (1 to 4 vectors of columns), with as many
/// accumulator sets as fit the register file beside the loads: eight registers of sums on
/// AVX2's sixteen (two FMA ports of 4-cycle latency need eight in flight), more on AVX-512's 32.
#[inline(always)]
unsafe fn tile_width<S: Simd>(m: &SparseMatrix, t: &Tile) {
    let narrow = S::REGS_PER_V > 1;
    // SAFETY: forwarded tile contract; each arm's width equals `t.w`.
    unsafe {
        match (t.w / LANES, narrow) {
            (1, _) => sparse_tile::<S, 1, 4>(m, t),
            (2, false) => sparse_tile::<S, 2, 4>(m, t),
            (2, true) => sparse_tile::<S, 2, 2>(m, t),
            (3, _) => sparse_tile::<S, 3, 2>(m, t),
            (_, false) => sparse_tile::<S, 4, 2>(m, t),
            (_, true) => sparse_tile::<S, 4, 1>(m, t),
        }
    }
}

/// Computes channels `t.ch0..t.ch1` of a tile `CB` vectors wide, one block of input channels at
/// a time: the first block starts from the bias, later ones from the partial sums in the output,
/// and the last applies the GELU and clamp while the row is in registers. `U` independent accumulator
/// sets hide the FMA latency.
#[inline(always)]
unsafe fn sparse_tile<S: Simd, const CB: usize, const U: usize>(m: &SparseMatrix, t: &Tile) {
    debug_assert_eq!(t.w, CB * LANES);
    let clamp = m.epi.clamps();
    let act = m.epi.act;
    let activates = act != crate::Activation::None;
    let (lo, hi) = (m.epi.min, m.epi.max);
    for kb in 0..m.nkb {
        let (first, last) = (kb == 0, kb + 1 == m.nkb);
        // SAFETY: the tile holds K rows `xs` apart; block `kb` starts at row kb * kblock < K.
        let xb = unsafe { t.xt.add(kb * m.kblock * t.xs) };
        for ch in t.ch0..t.ch1 {
            // SAFETY: kb * N + ch + 1 <= nkb * N indexes `ptr`; nonzeros j < nnz index rows/vals,
            // and rows[j] < kblock rows of the block (at most K - kb * kblock); ch < N rows of the
            // output tile.
            unsafe {
                let p = m.ptr.as_ptr().add(kb * m.n + ch);
                let (start, end) = (*p as usize, *p.add(1) as usize);
                if start == end && !first && !last {
                    continue;
                }
                let out = t.yt.add((ch - t.ch0) * t.ys);
                let mut acc = [[S::zero(); CB]; U];
                if first {
                    acc[0] = [S::splat(*m.bias.get_unchecked(ch)); CB];
                } else {
                    for v in 0..CB {
                        acc[0][v] = S::load(out.add(v * LANES));
                    }
                }
                let vals = m.vals.as_ptr();
                let rows = m.rows.as_ptr();
                let mut j = start;
                while j + U <= end {
                    for u in 0..U {
                        let wv = S::splat(*vals.add(j + u));
                        let r = xb.add(*rows.add(j + u) as usize * t.xs);
                        for v in 0..CB {
                            acc[u][v] = S::fmadd(wv, S::load(r.add(v * LANES)), acc[u][v]);
                        }
                    }
                    j += U;
                }
                while j < end {
                    let wv = S::splat(*vals.add(j));
                    let r = xb.add(*rows.add(j) as usize * t.xs);
                    for v in 0..CB {
                        acc[0][v] = S::fmadd(wv, S::load(r.add(v * LANES)), acc[0][v]);
                    }
                    j += 1;
                }
                for u in 1..U {
                    for v in 0..CB {
                        acc[0][v] = S::add(acc[0][v], acc[u][v]);
                    }
                }
                if last && (clamp || activates) {
                    let (lo, hi) = (S::splat(lo), S::splat(hi));
                    for v in 0..CB {
                        let a = crate::simd::activate::<S>(act, acc[0][v]);
                        let a = if clamp { S::min(S::max(a, lo), hi) } else { a };
                        S::store(out.add(v * LANES), a);
                    }
                } else {
                    for v in 0..CB {
                        S::store(out.add(v * LANES), acc[0][v]);
                    }
                }
            }
        }
    }
}
