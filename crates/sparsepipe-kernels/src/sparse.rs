//! Sparse weights: compressed per output channel, computed XNNPACK-style (one broadcast weight
//! times a contiguous run of tokens per nonzero).

use crate::exec::{balanced_parts, Tile, TileKernel};
use crate::isa::Isa;
use crate::simd::{Portable, Simd, LANES};
use crate::Epilogue;
use rayon::prelude::*;

/// A constant `[K, N]` weight with its zeros removed, stored per output channel.
#[derive(Debug, Clone)]
pub struct SparseMatrix {
    k: usize,
    n: usize,
    /// `col_ptr[c]..col_ptr[c + 1]` are channel `c`'s nonzeros in `idx`/`vals`.
    col_ptr: Vec<u32>,
    /// Input channel of each nonzero.
    idx: Vec<u32>,
    vals: Vec<f32>,
    /// `kb_ptr[c * (nkb + 1) + b]`: first nonzero of channel `c` at input channel `>= b * K_BLOCK`.
    kb_ptr: Vec<u32>,
    nkb: usize,
    epi: Epilogue,
    bias: Vec<f32>,
}

/// Input channels per cache block: a packed tile's `K_BLOCK x 64` floats stay in L1.
const K_BLOCK: usize = 256;

impl SparseMatrix {
    /// Packs `w(k, n)` for `k < K`, `n < N`, keeping the nonzeros.
    ///
    /// # Panics
    /// If the weight has 2^32 or more nonzeros or `K >= 2^32`.
    pub fn from_fn(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, epi: Epilogue) -> SparseMatrix {
        assert!(k < u32::MAX as usize, "K too large for a sparse weight");
        let mut col_ptr = Vec::with_capacity(n + 1);
        let mut idx = Vec::new();
        let mut vals = Vec::new();
        col_ptr.push(0u32);
        for c in 0..n {
            for r in 0..k {
                let v = w(r, c);
                if v != 0.0 {
                    idx.push(r as u32);
                    vals.push(v);
                }
            }
            col_ptr.push(u32::try_from(vals.len()).expect("too many nonzeros for a sparse weight"));
        }
        let bias = epi.bias_or_zeros(n);
        let nkb = k.div_ceil(K_BLOCK).max(1);
        let mut kb_ptr = Vec::with_capacity(n * (nkb + 1));
        for c in 0..n {
            let (s, e) = (col_ptr[c] as usize, col_ptr[c + 1] as usize);
            for b in 0..=nkb {
                let first = s + idx[s..e].partition_point(|&r| (r as usize) < b * K_BLOCK);
                kb_ptr.push(first as u32);
            }
        }
        SparseMatrix { k, n, col_ptr, idx, vals, kb_ptr, nkb, epi, bias }
    }

    /// Packs a row-major `[K, N]` weight.
    pub fn from_kn(w: &[f32], k: usize, n: usize, epi: Epilogue) -> SparseMatrix {
        assert_eq!(w.len(), k * n, "weight length is not K*N");
        Self::from_fn(k, n, |r, c| w[r * n + c], epi)
    }

    /// Packs a row-major `[N, K]` weight (the transposed storage of Gemm/Conv weights).
    pub fn from_nk(w: &[f32], n: usize, k: usize, epi: Epilogue) -> SparseMatrix {
        assert_eq!(w.len(), k * n, "weight length is not K*N");
        Self::from_fn(k, n, |r, c| w[c * k + r], epi)
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
    /// The epilogue applied on the way out.
    pub fn epilogue(&self) -> &Epilogue {
        &self.epi
    }
    /// Bytes held by the packed weight.
    pub fn packed_bytes(&self) -> usize {
        4 * (self.col_ptr.len() + self.idx.len() + self.vals.len() + self.bias.len() + self.kb_ptr.len())
    }

    /// `y = x·W` (+ epilogue) for `x: [outer, K, inner]`, `y: [outer, N, inner]`.
    pub(crate) fn run(&self, isa: Isa, x: &[f32], outer: usize, inner: usize, y: &mut [f32]) {
        crate::exec::run(self, isa, x, outer, inner, y)
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
        // Work per channel: its nonzeros plus a fixed cost for the epilogue.
        let prefix: Vec<usize> = self.col_ptr.iter().enumerate().map(|(c, &p)| p as usize + 4 * c).collect();
        balanced_parts(&prefix, parts, 1)
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
            _ => unsafe { sparse_tile::<Portable, 1>(self, t) },
        }
    }
    fn rows(&self, isa: Isa, x: &[f32], m: usize, y: &mut [f32]) -> bool {
        let rows = x.chunks(self.k.max(1)).zip(y.chunks_mut(self.n)).take(m);
        let threads = rayon::current_num_threads();
        if threads <= 1 || m * (self.nnz() + self.n) < (1 << 16) {
            for (xr, yr) in rows {
                // SAFETY: `xr` has K floats, `yr` N; indices are < K by construction; isa checked.
                unsafe { rows_dispatch(self, isa, xr, yr, 0, self.n) }
            }
            return true;
        }
        let ranges = self.channel_parts(4 * threads);
        for (xr, yr) in rows {
            let mut pieces = Vec::with_capacity(ranges.len());
            let mut rest = yr;
            for &(c0, c1) in &ranges {
                let (head, tail) = rest.split_at_mut(c1 - c0);
                pieces.push((c0, c1, head));
                rest = tail;
            }
            pieces.into_par_iter().for_each(|(c0, c1, ys)| {
                // SAFETY: `ys` holds channels c0..c1, `xr` K floats; isa checked by the caller.
                unsafe { rows_dispatch(self, isa, xr, ys, c0, c1) }
            });
        }
        true
    }
}

/// Row path dispatch: `y[c - c0] = epi(bias[c] + sum_j vals[j] * x[idx[j]])` for `c0..c1`.
///
/// # Safety
/// `x.len() >= K`, `y.len() >= c1 - c0`, `c1 <= N`, `isa` supported.
unsafe fn rows_dispatch(m: &SparseMatrix, isa: Isa, x: &[f32], y: &mut [f32], c0: usize, c1: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded contract.
        Isa::Avx512 => unsafe { rows_avx512(m, x, y, c0, c1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded contract.
        Isa::Avx2 => unsafe { rows_avx2(m, x, y, c0, c1) },
        // SAFETY: forwarded contract.
        _ => unsafe { sparse_rows::<Portable>(m, x, y, c0, c1) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(m: &SparseMatrix, t: &Tile) {
    // SAFETY: avx512f enabled here; tile contract forwarded.
    unsafe { sparse_tile::<crate::simd::Avx512, 4>(m, t) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(m: &SparseMatrix, t: &Tile) {
    // SAFETY: avx2+fma enabled here; tile contract forwarded.
    unsafe { sparse_tile::<crate::simd::Avx2, 2>(m, t) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(m: &SparseMatrix, x: &[f32], y: &mut [f32], c0: usize, c1: usize) {
    // SAFETY: avx512f enabled here; contract forwarded.
    unsafe { sparse_rows::<crate::simd::Avx512>(m, x, y, c0, c1) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(m: &SparseMatrix, x: &[f32], y: &mut [f32], c0: usize, c1: usize) {
    // SAFETY: avx2+fma enabled here; contract forwarded.
    unsafe { sparse_rows::<crate::simd::Avx2>(m, x, y, c0, c1) }
}

/// Computes a tile block of `K_BLOCK` input channels at a time (so the block stays in L1),
/// accumulating in the output tile, `CB` vectors of columns at a time, then one at a time.
#[inline(always)]
unsafe fn sparse_tile<S: Simd, const CB: usize>(m: &SparseMatrix, t: &Tile) {
    let nkb = m.nkb;
    for kb in 0..nkb {
        for ch in t.ch0..t.ch1 {
            // SAFETY: ch < N and kb < nkb index kb_ptr; columns stay inside the tile.
            unsafe {
                let base = m.kb_ptr.as_ptr().add(ch * (nkb + 1) + kb);
                let (start, end) = (*base as usize, *base.add(1) as usize);
                let (first, last) = (kb == 0, kb + 1 == nkb);
                if start == end && !first && !last {
                    continue;
                }
                let mut c = 0;
                while c + CB * LANES <= t.w {
                    sparse_channel::<S, CB>(m, t, ch, c, start, end, first, last);
                    c += CB * LANES;
                }
                while c < t.w {
                    sparse_channel::<S, 1>(m, t, ch, c, start, end, first, last);
                    c += LANES;
                }
            }
        }
    }
}

/// Nonzeros `start..end` of channel `ch` over `CB * LANES` columns at `c`: starts from the bias
/// when `first`, else from the partial sum in the output; applies the clamp when `last`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn sparse_channel<S: Simd, const CB: usize>(
    m: &SparseMatrix,
    t: &Tile,
    ch: usize,
    c: usize,
    start: usize,
    end: usize,
    first: bool,
    last: bool,
) {
    // SAFETY: nonzero j < nnz; idx[j] < K rows of `w` floats at xt; ch < N rows at yt; c + CB *
    // LANES <= w (caller).
    unsafe {
        let vals = m.vals.as_ptr();
        let idx = m.idx.as_ptr();
        let xt = t.xt.add(c);
        let out = t.yt.add(ch * t.w + c);
        let mut a0 = [S::zero(); CB];
        if first {
            a0 = [S::splat(*m.bias.get_unchecked(ch)); CB];
        } else {
            for (v, a) in a0.iter_mut().enumerate() {
                *a = S::load(out.add(v * LANES));
            }
        }
        let mut a1 = [S::zero(); CB];
        let mut j = start;
        while j + 2 <= end {
            let w0 = S::splat(*vals.add(j));
            let r0 = xt.add(*idx.add(j) as usize * t.w);
            let w1 = S::splat(*vals.add(j + 1));
            let r1 = xt.add(*idx.add(j + 1) as usize * t.w);
            for v in 0..CB {
                a0[v] = S::fmadd(w0, S::load(r0.add(v * LANES)), a0[v]);
            }
            for v in 0..CB {
                a1[v] = S::fmadd(w1, S::load(r1.add(v * LANES)), a1[v]);
            }
            j += 2;
        }
        if j < end {
            let w0 = S::splat(*vals.add(j));
            let r0 = xt.add(*idx.add(j) as usize * t.w);
            for v in 0..CB {
                a0[v] = S::fmadd(w0, S::load(r0.add(v * LANES)), a0[v]);
            }
        }
        if last && m.epi.clamps() {
            let (lo, hi) = (S::splat(m.epi.min), S::splat(m.epi.max));
            for v in 0..CB {
                S::store(out.add(v * LANES), S::min(S::max(S::add(a0[v], a1[v]), lo), hi));
            }
        } else {
            for v in 0..CB {
                S::store(out.add(v * LANES), S::add(a0[v], a1[v]));
            }
        }
    }
}

/// Gathered dot products for one row of a row-major input.
#[inline(always)]
unsafe fn sparse_rows<S: Simd>(m: &SparseMatrix, x: &[f32], y: &mut [f32], c0: usize, c1: usize) {
    let xp = x.as_ptr();
    for ch in c0..c1 {
        // SAFETY: as in `sparse_channel`; indices are < K <= x.len(); ch - c0 < y.len().
        unsafe {
            let start = *m.col_ptr.get_unchecked(ch) as usize;
            let end = *m.col_ptr.get_unchecked(ch + 1) as usize;
            let mut acc = S::zero();
            let mut j = start;
            while j + LANES <= end {
                let g = S::gather(xp, m.idx.as_ptr().add(j));
                acc = S::fmadd(S::load(m.vals.as_ptr().add(j)), g, acc);
                j += LANES;
            }
            let mut s = S::reduce_sum(acc) + *m.bias.get_unchecked(ch);
            while j < end {
                s += *m.vals.get_unchecked(j) * *xp.add(*m.idx.get_unchecked(j) as usize);
                j += 1;
            }
            *y.get_unchecked_mut(ch - c0) = m.epi.apply(s);
        }
    }
}
