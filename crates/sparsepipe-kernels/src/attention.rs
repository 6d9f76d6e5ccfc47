//! Scaled dot-product attention with an additive mask, `out = softmax(scale·q·kᵀ + mask)·v`, for
//! many independent (batch, head) problems at once. Every operand is read through strides, so
//! the `[batch, seq, heads, depth]` tensors a linear layer writes are used where they lie. Work is
//! split over (problem, query tile) on the current rayon pool; each job packs its problem's keys
//! and values once, then takes four queries at a time through scores, softmax and `·v` while they
//! stay in L1.

use rayon::prelude::*;

use crate::exec::with_scratch;
use crate::isa::Isa;
use crate::simd::{Portable, Simd, LANES};
use crate::KernelError;

/// A batch-like axis shared by every operand (batch, head): its size and each operand's stride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttnAxis {
    /// Extent of the axis.
    pub size: usize,
    /// Strides (in floats) of `q`, `k`, `v`, the mask (0 when broadcast) and `out` along it.
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub mask: usize,
    pub out: usize,
}

/// Shapes and strides (in floats) of one attention call.
#[derive(Debug, Clone, PartialEq)]
pub struct AttnLayout {
    /// Batch-like axes, outermost first (any number, including none).
    pub outer: Vec<AttnAxis>,
    /// Queries, keys, depth of `q`/`k`, depth of `v`/`out`.
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
    /// `q` strides along (query, depth).
    pub q: (usize, usize),
    /// `k` strides along (key, depth).
    pub k: (usize, usize),
    /// `v` strides along (key, value depth).
    pub v: (usize, usize),
    /// Mask strides along (query, key); 0 where it broadcasts.
    pub mask: (usize, usize),
    /// `out` strides along (query, value depth).
    pub out: (usize, usize),
    /// Multiplies `q·kᵀ` before the mask is added.
    pub scale: f32,
    /// A query whose keys are all masked to `-inf` gives zeros (the NaN guard exporters put after
    /// the softmax) instead of NaN.
    pub zero_masked_rows: bool,
}

/// Queries computed together (rows of the register tile).
const ROWS: usize = 4;

impl AttnLayout {
    fn groups(&self) -> usize {
        self.outer.iter().map(|a| a.size).product()
    }

    /// Float offsets of problem `g` in (q, k, v, mask, out).
    fn offsets(&self, mut g: usize) -> [usize; 5] {
        let mut o = [0usize; 5];
        for a in self.outer.iter().rev() {
            let i = g % a.size;
            g /= a.size;
            o[0] += i * a.q;
            o[1] += i * a.k;
            o[2] += i * a.v;
            o[3] += i * a.mask;
            o[4] += i * a.out;
        }
        o
    }

    /// One past the largest float index each operand is read or written at (0 when empty), or
    /// `None` when that index overflows.
    fn extents(&self) -> Option<[usize; 5]> {
        let last = |dims: &[(usize, usize)]| -> Option<usize> {
            if dims.iter().any(|&(n, _)| n == 0) {
                return Some(0);
            }
            dims.iter().try_fold(1usize, |acc, &(n, s)| acc.checked_add((n - 1).checked_mul(s)?))
        };
        let with = |f: fn(&AttnAxis) -> usize, rest: &[(usize, usize)]| {
            let mut dims: Vec<(usize, usize)> = self.outer.iter().map(|a| (a.size, f(a))).collect();
            dims.extend_from_slice(rest);
            last(&dims)
        };
        Some([
            with(|a| a.q, &[(self.sq, self.q.0), (self.d, self.q.1)])?,
            with(|a| a.k, &[(self.sk, self.k.0), (self.d, self.k.1)])?,
            with(|a| a.v, &[(self.sk, self.v.0), (self.dv, self.v.1)])?,
            with(|a| a.mask, &[(self.sq, self.mask.0), (self.sk, self.mask.1)])?,
            with(|a| a.out, &[(self.sq, self.out.0), (self.dv, self.out.1)])?,
        ])
    }

    /// Whether distinct output coordinates are distinct memory locations (so parallel jobs never
    /// write the same float).
    fn out_is_injective(&self) -> bool {
        let mut dims: Vec<(usize, usize)> = self.outer.iter().map(|a| (a.size, a.out)).collect();
        dims.push((self.sq, self.out.0));
        dims.push((self.dv, self.out.1));
        dims.retain(|&(n, _)| n > 1);
        dims.sort_by_key(|&(_, s)| s);
        let mut reach = 0usize; // largest offset reachable by the smaller-stride axes
        for (n, s) in dims {
            if s <= reach {
                return false;
            }
            match (n - 1).checked_mul(s).and_then(|v| v.checked_add(reach)) {
                Some(r) => reach = r,
                None => return false,
            }
        }
        true
    }
}

/// Computes `out = softmax(scale·q·kᵀ + mask)·v` (softmax over keys) for every problem of
/// `layout`, in parallel on the current rayon pool. Slices are checked against the layout.
pub fn attention(
    isa: Isa,
    layout: &AttnLayout,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if !isa.is_supported() {
        return Err(KernelError::Unsupported(isa));
    }
    let Some(ext) = layout.extents() else {
        return Err(KernelError::Shape("attention layout strides overflow the address space".into()));
    };
    let lens = [q.len(), k.len(), v.len(), mask.map_or(usize::MAX, |m| m.len()), out.len()];
    for (i, name) in ["q", "k", "v", "mask", "out"].iter().enumerate() {
        if ext[i] > lens[i] {
            return Err(KernelError::Shape(format!(
                "attention {name} has {} values, its layout reaches index {}",
                lens[i],
                ext[i] - 1
            )));
        }
    }
    if !layout.out_is_injective() {
        return Err(KernelError::Shape("attention output strides overlap".into()));
    }
    let groups = layout.groups();
    if groups == 0 || layout.sq == 0 || layout.dv == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let work = groups * layout.sq * layout.sk.max(1) * (layout.d + layout.dv);
    let parallel = threads > 1 && work >= 1 << 17;
    // Query tiles: enough jobs for every thread, never below 16 queries unless that is all.
    let tiles_per_group = if parallel { (4 * threads).div_ceil(groups).min(layout.sq.div_ceil(16)).max(1) } else { 1 };
    let qt = layout.sq.div_ceil(tiles_per_group).div_ceil(ROWS) * ROWS;
    let jobs: Vec<(usize, usize)> =
        (0..groups).flat_map(|g| (0..layout.sq).step_by(qt).map(move |i0| (g, i0))).collect();
    let out_ptr = OutPtr(out.as_mut_ptr());
    let body = |&(g, i0): &(usize, usize)| {
        let i1 = (i0 + qt).min(layout.sq);
        let mask_ptr = mask.map(|m| m.as_ptr());
        // SAFETY: every index the job forms is below the extents checked above; jobs write
        // disjoint output elements (distinct problem or query, injective output strides).
        unsafe { job_dispatch(isa, layout, g, i0, i1, q.as_ptr(), k.as_ptr(), v.as_ptr(), mask_ptr, out_ptr) }
    };
    if parallel {
        jobs.par_iter().for_each(body);
    } else {
        jobs.iter().for_each(body);
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: jobs write pairwise disjoint elements through it (see `attention`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Runs one job with the kernels of `isa` on this thread's scratch buffer (taken here, outside
/// the `target_feature` functions, so their bodies are compiled for the ISA).
#[allow(clippy::too_many_arguments)]
unsafe fn job_dispatch(
    isa: Isa,
    l: &AttnLayout,
    g: usize,
    i0: usize,
    i1: usize,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    mask: Option<*const f32>,
    out: OutPtr,
) {
    let skp = l.sk.div_ceil(LANES).max(1) * LANES;
    let dvp = l.dv.div_ceil(LANES) * LANES;
    with_scratch(l.d * skp + l.sk * dvp + ROWS * skp, |buf| {
        let [_, ko, vo, _, _] = l.offsets(g);
        let (kt, rest) = buf.split_at_mut(l.d * skp);
        // SAFETY: the problem's keys and values lie below the extents `attention` checked.
        unsafe {
            pack_keys(isa, l, k.add(ko), kt, skp);
            pack_values(l, v.add(vo), &mut rest[..l.sk * dvp], dvp);
        }
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked the CPU supports AVX-512F; pointer contract forwarded.
            Isa::Avx512 => unsafe { job_avx512(l, g, i0, i1, q, mask, out, buf) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above for AVX2+FMA.
            Isa::Avx2 => unsafe { job_avx2(l, g, i0, i1, q, mask, out, buf) },
            // SAFETY: pointer contract forwarded.
            _ => unsafe { job::<Portable>(l, g, i0, i1, q, mask, out, buf) },
        }
    })
}

/// Keys of one problem (at `k`) transposed to `kt: [d][skp]`, zero past `sk`: a SIMD transpose
/// when the depth is contiguous (as linears write it).
///
/// # Safety
/// `k` plus in-range (key, depth) coordinates times the layout's strides must be readable.
unsafe fn pack_keys(isa: Isa, l: &AttnLayout, k: *const f32, kt: &mut [f32], skp: usize) {
    if l.sk == 0 || l.d == 0 {
        return;
    }
    if l.k.1 == 1 {
        let len = (l.sk - 1) * l.k.0 + l.d;
        // SAFETY: the last key's last depth, the highest index read, is `len - 1` (caller).
        let src = unsafe { std::slice::from_raw_parts(k, len) };
        crate::transpose::transpose(isa, src, l.sk, l.d, l.k.0, kt, skp);
    } else {
        for j in 0..l.sk {
            for dd in 0..l.d {
                // SAFETY: in-range coordinates (caller).
                kt[dd * skp + j] = unsafe { *k.add(j * l.k.0 + dd * l.k.1) };
            }
        }
    }
    for row in kt.chunks_exact_mut(skp) {
        row[l.sk..].fill(0.0);
    }
}

/// Values of one problem (at `v`) copied to `vp: [sk][dvp]`, zero past `dv`.
///
/// # Safety
/// `v` plus in-range (key, depth) coordinates times the layout's strides must be readable.
unsafe fn pack_values(l: &AttnLayout, v: *const f32, vp: &mut [f32], dvp: usize) {
    for (j, row) in vp.chunks_exact_mut(dvp).enumerate() {
        if l.v.1 == 1 {
            // SAFETY: key j's `dv` contiguous values are in range (caller).
            row[..l.dv].copy_from_slice(unsafe { std::slice::from_raw_parts(v.add(j * l.v.0), l.dv) });
        } else {
            for (c, slot) in row[..l.dv].iter_mut().enumerate() {
                // SAFETY: in-range coordinates (caller).
                *slot = unsafe { *v.add(j * l.v.0 + c * l.v.1) };
            }
        }
        row[l.dv..].fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn job_avx512(
    l: &AttnLayout,
    g: usize,
    i0: usize,
    i1: usize,
    q: *const f32,
    mask: Option<*const f32>,
    out: OutPtr,
    buf: &mut [f32],
) {
    // SAFETY: avx512f enabled here; contract forwarded.
    unsafe { job::<crate::simd::Avx512>(l, g, i0, i1, q, mask, out, buf) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn job_avx2(
    l: &AttnLayout,
    g: usize,
    i0: usize,
    i1: usize,
    q: *const f32,
    mask: Option<*const f32>,
    out: OutPtr,
    buf: &mut [f32],
) {
    // SAFETY: avx2+fma enabled here; contract forwarded.
    unsafe { job::<crate::simd::Avx2>(l, g, i0, i1, q, mask, out, buf) }
}

/// Queries `i0..i1` of problem `g`, with `buf` holding its packed keys (`[d][skp]`) and values
/// (`[sk][dvp]`) followed by scratch for `4*skp` scores.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn job<S: Simd>(
    l: &AttnLayout,
    g: usize,
    i0: usize,
    i1: usize,
    q: *const f32,
    mask: Option<*const f32>,
    out: OutPtr,
    buf: &mut [f32],
) {
    let [qo, _, _, mo, oo] = l.offsets(g);
    let skp = l.sk.div_ceil(LANES).max(1) * LANES;
    let dvp = l.dv.div_ceil(LANES) * LANES;
    let (kt, rest) = buf.split_at_mut(l.d * skp);
    let (vp, s) = rest.split_at_mut(l.sk * dvp);
    // SAFETY: for the whole block, offsets plus in-range coordinates times strides stay below the
    // extents `attention` checked; scratch slices are sized for the loops below.
    unsafe {
        let (q, mask, out) = (q.wrapping_add(qo), mask.map(|m| m.wrapping_add(mo)), out.0.add(oo));
        let mut i = i0;
        while i + ROWS <= i1 {
            rows::<S, ROWS>(l, i, q, kt, vp, s, mask, out, skp, dvp);
            i += ROWS;
        }
        while i < i1 {
            rows::<S, 1>(l, i, q, kt, vp, s, mask, out, skp, dvp);
            i += 1;
        }
    }
}

/// Queries `i..i + R` of one problem: scores into `s` (`R` rows of `skp`), softmax, then `·v`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<S: Simd, const R: usize>(
    l: &AttnLayout,
    i: usize,
    q: *const f32,
    kt: &[f32],
    vp: &[f32],
    s: &mut [f32],
    mask: Option<*const f32>,
    out: *mut f32,
    skp: usize,
    dvp: usize,
) {
    // SAFETY: for the whole function, `kt` is [d][skp], `vp` [sk][dvp], `s` at least R*skp; q/mask/out
    // are read/written at coordinates inside the layout (caller).
    unsafe {
        // Scores, up to 4 vectors of keys at a time (one where a vector takes two registers:
        // R rows of 4 would be 32 registers of sums on AVX2's 16).
        let most = if S::REGS_PER_V == 1 { 4 } else { 1 };
        let mut c0 = 0;
        while c0 < skp {
            let nv = ((skp - c0) / LANES).min(most);
            match nv {
                1 => scores::<S, R, 1>(l, i, q, kt, s, skp, c0),
                2 => scores::<S, R, 2>(l, i, q, kt, s, skp, c0),
                3 => scores::<S, R, 3>(l, i, q, kt, s, skp, c0),
                _ => scores::<S, R, 4>(l, i, q, kt, s, skp, c0),
            }
            c0 += nv * LANES;
        }
        // Scale, mask, padding and the row maximum, then the softmax numerators in place.
        let mut inv = [0f32; R];
        let scale = S::splat(l.scale);
        let mut tail = [f32::NEG_INFINITY; LANES];
        for r in 0..R {
            let p = s.as_mut_ptr().add(r * skp);
            let m = mask.map(|m| m.add((i + r) * l.mask.0));
            let mut mx = S::splat(f32::NEG_INFINITY);
            let mut c = 0;
            while c + LANES <= l.sk {
                let x = S::mul(S::load(p.add(c)), scale);
                let x = match m {
                    Some(m) if l.mask.1 == 1 => S::add(x, S::load(m.add(c))),
                    Some(m) if l.mask.1 == 0 => S::add(x, S::splat(*m)),
                    Some(m) => {
                        for (e, t) in tail.iter_mut().enumerate() {
                            *t = *m.add((c + e) * l.mask.1);
                        }
                        S::add(x, S::load(tail.as_ptr()))
                    }
                    None => x,
                };
                S::store(p.add(c), x);
                mx = S::max(mx, x);
                c += LANES;
            }
            if c < l.sk {
                // The last keys, then -inf for the padding lanes.
                for (e, t) in tail.iter_mut().enumerate() {
                    *t = if c + e < l.sk {
                        *p.add(c + e) * l.scale + m.map_or(0.0, |m| *m.add((c + e) * l.mask.1))
                    } else {
                        f32::NEG_INFINITY
                    };
                }
                let x = S::load(tail.as_ptr());
                S::store(p.add(c), x);
                mx = S::max(mx, x);
            }
            let row = std::slice::from_raw_parts_mut(p, skp);
            let mx = S::reduce_max(mx);
            if mx == f32::NEG_INFINITY {
                // Every key masked out: softmax is 0/0.
                row.fill(0.0);
                inv[r] = if l.zero_masked_rows { 0.0 } else { f32::NAN };
                continue;
            }
            let mx = S::splat(mx);
            let mut sum = S::zero();
            for c in (0..skp).step_by(LANES) {
                let e = S::exp(S::add(S::load(p.add(c)), S::mul(mx, S::splat(-1.0))));
                S::store(p.add(c), e);
                sum = S::add(sum, e);
            }
            inv[r] = 1.0 / S::reduce_sum(sum);
        }
        // Probabilities times values, up to 4 vectors of value depth at a time (one on AVX2).
        let mut c0 = 0;
        while c0 < dvp {
            let nv = ((dvp - c0) / LANES).min(most);
            match nv {
                1 => weighted::<S, R, 1>(l, i, vp, s, &inv, out, skp, dvp, c0),
                2 => weighted::<S, R, 2>(l, i, vp, s, &inv, out, skp, dvp, c0),
                3 => weighted::<S, R, 3>(l, i, vp, s, &inv, out, skp, dvp, c0),
                _ => weighted::<S, R, 4>(l, i, vp, s, &inv, out, skp, dvp, c0),
            }
            c0 += nv * LANES;
        }
    }
}

/// `s[r][c0 .. c0 + NV*16] = q[i + r] · kt[:, c0 ..]` for `r < R`.
#[inline(always)]
unsafe fn scores<S: Simd, const R: usize, const NV: usize>(
    l: &AttnLayout,
    i: usize,
    q: *const f32,
    kt: &[f32],
    s: &mut [f32],
    skp: usize,
    c0: usize,
) {
    // SAFETY: as in `rows`.
    unsafe {
        let mut acc = [[S::zero(); NV]; R];
        let kp = kt.as_ptr().add(c0);
        for dd in 0..l.d {
            let mut kv = [S::zero(); NV];
            for (vi, x) in kv.iter_mut().enumerate() {
                *x = S::load(kp.add(dd * skp + vi * LANES));
            }
            for r in 0..R {
                let qv = S::splat(*q.add((i + r) * l.q.0 + dd * l.q.1));
                for vi in 0..NV {
                    acc[r][vi] = S::fmadd(qv, kv[vi], acc[r][vi]);
                }
            }
        }
        let sp = s.as_mut_ptr();
        for r in 0..R {
            for vi in 0..NV {
                S::store(sp.add(r * skp + c0 + vi * LANES), acc[r][vi]);
            }
        }
    }
}

/// `out[i + r][c0 ..] = inv[r] · Σ_j s[r][j] · vp[j][c0 ..]` for `r < R`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weighted<S: Simd, const R: usize, const NV: usize>(
    l: &AttnLayout,
    i: usize,
    vp: &[f32],
    s: &[f32],
    inv: &[f32; R],
    out: *mut f32,
    skp: usize,
    dvp: usize,
    c0: usize,
) {
    // SAFETY: as in `rows`.
    unsafe {
        let mut acc = [[S::zero(); NV]; R];
        let vptr = vp.as_ptr().add(c0);
        let sp = s.as_ptr();
        for j in 0..l.sk {
            let mut vv = [S::zero(); NV];
            for (vi, x) in vv.iter_mut().enumerate() {
                *x = S::load(vptr.add(j * dvp + vi * LANES));
            }
            for r in 0..R {
                let p = S::splat(*sp.add(r * skp + j));
                for vi in 0..NV {
                    acc[r][vi] = S::fmadd(p, vv[vi], acc[r][vi]);
                }
            }
        }
        let mut tmp = [0f32; LANES];
        for r in 0..R {
            let scale = S::splat(inv[r]);
            for vi in 0..NV {
                let c = c0 + vi * LANES;
                let o = out.add((i + r) * l.out.0 + c * l.out.1);
                if l.out.1 == 1 && c + LANES <= l.dv {
                    S::store(o, S::mul(acc[r][vi], scale));
                    continue;
                }
                S::store(tmp.as_mut_ptr(), S::mul(acc[r][vi], scale));
                for (e, &x) in tmp.iter().enumerate().take(l.dv.saturating_sub(c)) {
                    *o.add(e * l.out.1) = x;
                }
            }
        }
    }
}

/// Reference attention in f64 with straight loops; used by tests.
pub fn reference_attention(l: &AttnLayout, q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0f32; l.extents().expect("layout within the address space")[4]];
    for g in 0..l.groups() {
        let [qo, ko, vo, mo, oo] = l.offsets(g);
        for i in 0..l.sq {
            let mut sc: Vec<f64> = (0..l.sk)
                .map(|j| {
                    let dot: f64 = (0..l.d)
                        .map(|dd| q[qo + i * l.q.0 + dd * l.q.1] as f64 * k[ko + j * l.k.0 + dd * l.k.1] as f64)
                        .sum();
                    dot * l.scale as f64 + mask.map_or(0.0, |m| m[mo + i * l.mask.0 + j * l.mask.1] as f64)
                })
                .collect();
            let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            sc.iter_mut().for_each(|x| *x = (*x - mx).exp());
            let mut sum: f64 = sc.iter().sum();
            if mx == f64::NEG_INFINITY && l.zero_masked_rows {
                sc.iter_mut().for_each(|x| *x = 0.0);
                sum = 1.0;
            }
            for c in 0..l.dv {
                let acc: f64 = (0..l.sk).map(|j| sc[j] * v[vo + j * l.v.0 + c * l.v.1] as f64).sum();
                out[oo + i * l.out.0 + c * l.out.1] = (acc / sum) as f32;
            }
        }
    }
    out
}
