//! Cache sizes read from the CPU at run time, for block sizes that keep a tile in L1.

use std::sync::OnceLock;

/// Fallback when the CPU does not report its L1 data cache (the smallest common x86-64 size).
const DEFAULT_L1D: usize = 32 * 1024;

/// Bytes of level-1 data cache per core, read once (CPUID leaf 4 on Intel, 0x8000001D on AMD).
pub fn l1d_bytes() -> usize {
    static L1D: OnceLock<usize> = OnceLock::new();
    *L1D.get_or_init(|| detect_l1d().filter(|&b| (8 * 1024..=1024 * 1024).contains(&b)).unwrap_or(DEFAULT_L1D))
}

#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)] // CPUID intrinsics are `unsafe` before Rust 1.87 (the MSRV is older).
fn detect_l1d() -> Option<usize> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: CPUID is available on every x86-64 CPU; leaf 0 and 0x80000000 report the highest
    // supported standard and extended leaves, checked before the cache leaves are read.
    let (max_std, max_ext) = unsafe { (__cpuid(0).eax, __cpuid(0x8000_0000).eax) };
    let leaf = if max_ext >= 0x8000_001D {
        0x8000_001D
    } else if max_std >= 4 {
        4
    } else {
        return None;
    };
    for sub in 0..16 {
        // SAFETY: `leaf` is supported (checked above); CPUID has no other precondition.
        let r = unsafe { __cpuid_count(leaf, sub) };
        let kind = r.eax & 0x1f;
        if kind == 0 {
            break;
        }
        let level = (r.eax >> 5) & 0x7;
        if level == 1 && kind == 1 {
            let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
            let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
            let line = (r.ebx & 0xfff) as usize + 1;
            let sets = r.ecx as usize + 1;
            return Some(ways * parts * line * sets);
        }
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_l1d() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn l1d_is_plausible() {
        let b = super::l1d_bytes();
        assert!((8 * 1024..=1024 * 1024).contains(&b), "{b}");
    }
}
