//! Out-of-place matrix transposes with SIMD block kernels (16x16 AVX-512, 8x8 AVX), used to lay
//! row-major activations out channels-first and back.

use crate::isa::Isa;

/// `dst[c * ld_dst + r] = src[r * ld_src + c]` for `r < rows`, `c < cols`.
///
/// # Panics
/// If either slice is too short for the extents given.
pub(crate) fn transpose(
    isa: Isa,
    src: &[f32],
    rows: usize,
    cols: usize,
    ld_src: usize,
    dst: &mut [f32],
    ld_dst: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * ld_src + cols, "transpose: source too short");
    assert!(dst.len() >= (cols - 1) * ld_dst + rows, "transpose: destination too short");
    let b = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Portable => 8,
    };
    let (full_r, full_c) = (rows / b * b, cols / b * b);
    for r0 in (0..full_r).step_by(b) {
        for c0 in (0..full_c).step_by(b) {
            let s = &src[r0 * ld_src + c0..];
            let d = &mut dst[c0 * ld_dst + r0..];
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the asserts above guarantee a full block at s and d; the caller checked isa.
                Isa::Avx512 => unsafe { block16_avx512(s.as_ptr(), ld_src, d.as_mut_ptr(), ld_dst) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Isa::Avx2 => unsafe { block8_avx(s.as_ptr(), ld_src, d.as_mut_ptr(), ld_dst) },
                _ => scalar(s, b, b, ld_src, d, ld_dst),
            }
        }
    }
    if full_c < cols {
        scalar(&src[full_c..], rows, cols - full_c, ld_src, &mut dst[full_c * ld_dst..], ld_dst);
    }
    if full_r < rows {
        scalar(&src[full_r * ld_src..], rows - full_r, full_c, ld_src, &mut dst[full_r..], ld_dst);
    }
}

fn scalar(src: &[f32], rows: usize, cols: usize, ld_src: usize, dst: &mut [f32], ld_dst: usize) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * ld_dst + r] = src[r * ld_src + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block16_avx512(s: *const f32, ld_s: usize, d: *mut f32, ld_d: usize) {
    use std::arch::x86_64::*;
    // SAFETY: 16 rows of 16 floats readable at s (stride ld_s) and writable at d (stride ld_d).
    unsafe {
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(s.add(i * ld_s));
        }
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for g in 0..4 {
            let o = 4 * g;
            r[o] = _mm512_shuffle_ps::<0x44>(t[o], t[o + 2]);
            r[o + 1] = _mm512_shuffle_ps::<0xEE>(t[o], t[o + 2]);
            r[o + 2] = _mm512_shuffle_ps::<0x44>(t[o + 1], t[o + 3]);
            r[o + 3] = _mm512_shuffle_ps::<0xEE>(t[o + 1], t[o + 3]);
        }
        for h in 0..2 {
            let o = 8 * h;
            for i in 0..4 {
                t[o + i] = _mm512_shuffle_f32x4::<0x88>(r[o + i], r[o + 4 + i]);
                t[o + 4 + i] = _mm512_shuffle_f32x4::<0xDD>(r[o + i], r[o + 4 + i]);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
            r[8 + i] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[8 + i]);
        }
        for (i, v) in r.iter().enumerate() {
            _mm512_storeu_ps(d.add(i * ld_d), *v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block8_avx(s: *const f32, ld_s: usize, d: *mut f32, ld_d: usize) {
    use std::arch::x86_64::*;
    // SAFETY: 8 rows of 8 floats readable at s (stride ld_s) and writable at d (stride ld_d).
    unsafe {
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, v) in r.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(s.add(i * ld_s));
        }
        let mut t = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for g in 0..2 {
            let o = 4 * g;
            r[o] = _mm256_shuffle_ps::<0x44>(t[o], t[o + 2]);
            r[o + 1] = _mm256_shuffle_ps::<0xEE>(t[o], t[o + 2]);
            r[o + 2] = _mm256_shuffle_ps::<0x44>(t[o + 1], t[o + 3]);
            r[o + 3] = _mm256_shuffle_ps::<0xEE>(t[o + 1], t[o + 3]);
        }
        for i in 0..4 {
            t[i] = _mm256_permute2f128_ps::<0x20>(r[i], r[4 + i]);
            t[4 + i] = _mm256_permute2f128_ps::<0x31>(r[i], r[4 + i]);
        }
        for (i, v) in t.iter().enumerate() {
            _mm256_storeu_ps(d.add(i * ld_d), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_matches_scalar() {
        for isa in Isa::available() {
            for (rows, cols) in [(16, 16), (8, 8), (33, 47), (1, 70), (70, 1), (64, 768), (5, 3)] {
                let (ld_s, ld_d) = (cols + 3, rows + 5);
                let src: Vec<f32> = (0..rows * ld_s).map(|i| i as f32).collect();
                let mut got = vec![-1.0; cols * ld_d];
                let mut want = vec![-1.0; cols * ld_d];
                transpose(isa, &src, rows, cols, ld_s, &mut got, ld_d);
                scalar(&src, rows, cols, ld_s, &mut want, ld_d);
                assert_eq!(got, want, "{isa} {rows}x{cols}");
            }
        }
    }
}
