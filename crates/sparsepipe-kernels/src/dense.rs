//! Dense weights: packed into panels of 8 output channels, computed with a register-blocked
//! micro-kernel over channels-first activations.

use crate::exec::{balanced_parts, Tile, TileKernel};
use crate::isa::Isa;
use crate::simd::{Portable, Simd, LANES};
use crate::Epilogue;

/// Output channels per packed panel.
const PANEL: usize = 8;

/// A constant `[K, N]` weight packed densely as `[ceil(N / 8)][K][8]`.
#[derive(Debug, Clone)]
pub struct DenseMatrix {
    k: usize,
    n: usize,
    panels: Vec<f32>,
    epi: Epilogue,
    /// Bias padded to a whole number of panels.
    bias: Vec<f32>,
}

impl DenseMatrix {
    /// Packs `w(k, n)` for `k < K`, `n < N`.
    pub fn from_fn(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, epi: Epilogue) -> DenseMatrix {
        let np = n.div_ceil(PANEL);
        let mut panels = vec![0f32; np * k * PANEL];
        for p in 0..np {
            for r in 0..k {
                for j in 0..PANEL {
                    let c = p * PANEL + j;
                    if c < n {
                        panels[(p * k + r) * PANEL + j] = w(r, c);
                    }
                }
            }
        }
        let mut bias = epi.bias_or_zeros(n);
        bias.resize(np * PANEL, 0.0);
        DenseMatrix { k, n, panels, epi, bias }
    }

    /// Packs a row-major `[K, N]` weight.
    pub fn from_kn(w: &[f32], k: usize, n: usize, epi: Epilogue) -> DenseMatrix {
        assert_eq!(w.len(), k * n, "weight length is not K*N");
        Self::from_fn(k, n, |r, c| w[r * n + c], epi)
    }

    /// Packs a row-major `[N, K]` weight.
    pub fn from_nk(w: &[f32], n: usize, k: usize, epi: Epilogue) -> DenseMatrix {
        assert_eq!(w.len(), k * n, "weight length is not K*N");
        Self::from_fn(k, n, |r, c| w[c * k + r], epi)
    }

    /// The weights of `parts` side by side (`[K, N1 + N2 + ...]`) as one matrix, or `None`
    /// unless they share `K` and everything but the bias in their epilogue.
    pub fn concat_n(parts: &[&DenseMatrix]) -> Option<DenseMatrix> {
        let first = parts.first()?;
        let same = |m: &&DenseMatrix| {
            m.k == first.k && m.epi.gelu == first.epi.gelu && m.epi.min == first.epi.min && m.epi.max == first.epi.max
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
        Some(DenseMatrix::from_fn(first.k, owner.len(), |r, c| parts[owner[c].0].weight(r, owner[c].1), epi))
    }

    /// The weight at input channel `r`, output channel `c`.
    fn weight(&self, r: usize, c: usize) -> f32 {
        self.panels[((c / PANEL) * self.k + r) * PANEL + c % PANEL]
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
    pub(crate) fn run(&self, isa: Isa, x: &[f32], outer: usize, inner: usize, add: Option<&[f32]>, y: &mut [f32]) {
        crate::exec::run(self, isa, x, outer, inner, add, y)
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
    fn channel_parts(&self, parts: usize) -> Vec<(usize, usize)> {
        let prefix: Vec<usize> = (0..=self.n).collect();
        balanced_parts(&prefix, parts, PANEL)
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
            _ => unsafe { dense_tile::<Portable, 8, 1>(self, t) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(m: &DenseMatrix, t: &Tile) {
    // SAFETY: avx512f enabled here; tile contract forwarded.
    unsafe { dense_tile::<crate::simd::Avx512, 8, 2>(m, t) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(m: &DenseMatrix, t: &Tile) {
    // SAFETY: avx2+fma enabled here; tile contract forwarded.
    unsafe { dense_tile::<crate::simd::Avx2, 4, 1>(m, t) }
}

/// Computes a tile: `CB` vectors of columns at a time (then one), `NR` channels at a time.
/// Channel ranges start on panel boundaries (see `channel_parts`).
#[inline(always)]
unsafe fn dense_tile<S: Simd, const NR: usize, const CB: usize>(m: &DenseMatrix, t: &Tile) {
    let width = CB * LANES;
    let mut c = 0;
    while c < t.w {
        let wide = c + width <= t.w;
        let mut ch = t.ch0;
        while ch < t.ch1 {
            let valid = NR.min(t.ch1 - ch);
            // SAFETY: ch is NR-aligned inside the range; columns are inside the tile.
            unsafe {
                if wide {
                    dense_block::<S, NR, CB>(m, t, ch, valid, c)
                } else {
                    dense_block::<S, NR, 1>(m, t, ch, valid, c)
                }
            }
            ch += NR;
        }
        c += if wide { width } else { LANES };
    }
}

/// Channels `ch..ch + valid` (inside one panel, `valid <= NR`) over `CB * LANES` columns at `c`.
#[inline(always)]
unsafe fn dense_block<S: Simd, const NR: usize, const CB: usize>(
    m: &DenseMatrix,
    t: &Tile,
    ch: usize,
    valid: usize,
    c: usize,
) {
    let (p, sub) = (ch / PANEL, ch % PANEL);
    // SAFETY: panel p has K rows of PANEL floats; sub + NR <= PANEL since NR divides PANEL and
    // ch is NR-aligned; bias is padded to whole panels; the tile covers K rows of xt and the
    // channels' rows of yt (only `valid` rows are stored).
    unsafe {
        let wp = m.panels.as_ptr().add(p * m.k * PANEL + sub);
        let xp = t.xt.add(c);
        let mut acc = [[S::zero(); CB]; NR];
        for (r, row) in acc.iter_mut().enumerate() {
            *row = [S::splat(*m.bias.get_unchecked(ch + r)); CB];
        }
        for kk in 0..m.k {
            let xr = xp.add(kk * t.w);
            let mut xs = [S::zero(); CB];
            for (v, x) in xs.iter_mut().enumerate() {
                *x = S::load(xr.add(v * LANES));
            }
            let w = wp.add(kk * PANEL);
            for (r, row) in acc.iter_mut().enumerate() {
                let wr = S::splat(*w.add(r));
                for v in 0..CB {
                    row[v] = S::fmadd(wr, xs[v], row[v]);
                }
            }
        }
        let clamp = m.epi.clamps();
        let (lo, hi) = (S::splat(m.epi.min), S::splat(m.epi.max));
        for (r, row) in acc.iter().enumerate().take(valid) {
            let out = t.yt.add((ch - t.ch0 + r) * t.w + c);
            for (v, &a) in row.iter().enumerate() {
                let a = if m.epi.gelu { crate::simd::gelu::<S>(a) } else { a };
                let a = if clamp { S::min(S::max(a, lo), hi) } else { a };
                S::store(out.add(v * LANES), a);
            }
        }
    }
}
