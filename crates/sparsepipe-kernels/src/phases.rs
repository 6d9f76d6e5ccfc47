//! Zero-padded stride phases of an image plane, the layout both convolution kernels read: the
//! padded plane is split into `stride.0 x stride.1` phases (phase `(py, px)` holds padded rows
//! `≡ py` and columns `≡ px`), so the input under tap `(dy, dx)` of output `(oy, ox)` sits at
//! `taps[dy·kw + dx] + oy·pw + ox` and every tap of a run of outputs along a row is one
//! contiguous run of the phases — no bounds checks, no strided reads.

use crate::conv::Conv2d;
use crate::simd::{Simd, LANES};

/// Floats past the end of a phases buffer that vector reads of the last run may reach.
pub(crate) const PHASES_SLACK: usize = 8 * LANES;

/// The phase layout of one geometry.
#[derive(Debug, Clone)]
pub(crate) struct Phases {
    /// Rows of each phase: those any output reads, plus a spare one so that reads of a band of
    /// rows laid end to end (past each row's last output) stay inside.
    pub hq: usize,
    /// Columns of each phase.
    pub pw: usize,
    /// Offset of each tap's input for output `(0, 0)` (`(dy, dx)` row-major).
    pub taps: Vec<usize>,
}

impl Phases {
    pub(crate) fn new(g: &Conv2d) -> Phases {
        let (sh, sw) = g.stride;
        let hp = (g.oh - 1) * sh + (g.kh - 1) * g.dilation.0 + 1;
        let span = (g.ow - 1) * sw + (g.kw - 1) * g.dilation.1 + 1;
        let (hq, pw) = (hp.div_ceil(sh) + 1, span.div_ceil(sw));
        let mut taps = Vec::with_capacity(g.kh * g.kw);
        for dy in 0..g.kh {
            let (py, qy) = ((dy * g.dilation.0) % sh, (dy * g.dilation.0) / sh);
            for dx in 0..g.kw {
                let (px, qx) = ((dx * g.dilation.1) % sw, (dx * g.dilation.1) / sw);
                taps.push((py * sw + px) * hq * pw + qy * pw + qx);
            }
        }
        Phases { hq, pw, taps }
    }

    /// Floats of one plane's phases.
    pub(crate) fn plane_len(&self, g: &Conv2d) -> usize {
        g.stride.0 * g.stride.1 * self.hq * self.pw
    }
}

/// Writes the input plane `x` (`[H, W]`) into its phases `dst` ([`Phases::plane_len`] floats),
/// through `tmp` (`pw · stride.1` floats, zero outside the columns a row fills). Only the
/// positions that hold input are written: the padding in `dst` must already be zero (it is the
/// same for every plane of a geometry). Plain loops, no closures, so the caller's target
/// features apply.
///
/// # Safety
/// `S` must be supported by this CPU.
#[inline(always)]
pub(crate) unsafe fn split_plane<S: Simd>(g: &Conv2d, ph: &Phases, x: &[f32], dst: &mut [f32], tmp: &mut [f32]) {
    let (sh, sw) = g.stride;
    let pw = ph.pw;
    let phase_len = ph.hq * pw;
    let (lo, hi) = (g.pad.1.min(pw * sw), (g.pad.1 + g.w).min(pw * sw));
    for q in 0..ph.hq {
        for py in 0..sh {
            let iy = (q * sh + py) as isize - g.pad.0 as isize;
            if !(0..g.h as isize).contains(&iy) {
                continue;
            }
            let row = &x[iy as usize * g.w..][..hi - lo];
            let at = py * sw * phase_len + q * pw;
            if sw == 1 {
                dst[at + lo..at + hi].copy_from_slice(row);
                continue;
            }
            tmp[lo..hi].copy_from_slice(row);
            if sw == 2 {
                let (d0, d1) = dst[at..at + phase_len + pw].split_at_mut(phase_len);
                let mut j = 0;
                while j + LANES <= pw {
                    // SAFETY: `tmp` holds 2·pw floats, so 2j + 2·LANES of them; both phase
                    // rows hold pw.
                    unsafe {
                        let (e, o) = S::deinterleave(tmp.as_ptr().add(2 * j));
                        S::store(d0.as_mut_ptr().add(j), e);
                        S::store(d1.as_mut_ptr().add(j), o);
                    }
                    j += LANES;
                }
                for j in j..pw {
                    d0[j] = tmp[2 * j];
                    d1[j] = tmp[2 * j + 1];
                }
                continue;
            }
            for px in 0..sw {
                let d = &mut dst[at + px * phase_len..][..pw];
                for (j, v) in d.iter_mut().enumerate() {
                    *v = tmp[j * sw + px];
                }
            }
        }
    }
}

/// Copies `n` floats from `src` to `dst`, a vector at a time. Where both sides have room for it
/// (`src_room`, `dst_room` floats from the pointers), the last vector is copied whole — the
/// floats past `n` that it writes must be ones the caller writes again or ignores; otherwise it
/// ends exactly at `n`.
///
/// # Safety
/// `src` readable for `src_room >= n` floats, `dst` writable for `dst_room >= n`; `S` supported.
#[inline(always)]
pub(crate) unsafe fn copy_run<S: Simd>(src: *const f32, src_room: usize, dst: *mut f32, dst_room: usize, n: usize) {
    let full = n / LANES * LANES;
    // SAFETY: every access lies within the rooms (checked per branch).
    unsafe {
        let mut i = 0;
        while i < full {
            S::store(dst.add(i), S::load(src.add(i)));
            i += LANES;
        }
        if full == n {
            return;
        }
        if src_room >= full + LANES && dst_room >= full + LANES {
            S::store(dst.add(full), S::load(src.add(full)));
        } else if n >= LANES {
            S::store(dst.add(n - LANES), S::load(src.add(n - LANES)));
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
    }
}
