//! Kernel efficiency table: GFLOP/s and % of the core's FMA peak per BERT-base shape.
//!
//! The peak is measured, not assumed: a loop of independent 512-bit (or 256-bit) FMAs on one
//! core gives this CPU's FMA throughput at its current clock (two FMA ports x 16 lanes x 2 FLOP
//! per cycle on AVX-512 machines). Each shape is then timed single-threaded (median of
//! repetitions, after a warm-up) and its useful FLOPs (2 per nonzero per token, plus the bias)
//! are divided by that peak. With `SPARSEPIPE_NUM_THREADS=T` it also runs on T threads and
//! reports the speed-up. Run: `cargo bench -p sparsepipe-kernels --bench peak`
//! (optional filter argument: a substring of the shape name, e.g. `K768xN3072`; `KBLOCK=n` packs
//! the sparse weights with `n` input channels per cache block instead of the CPU's default;
//! `MS=20,64` and `SHAPES=384x1536,1536x384` replace the row counts and `KxN` shapes; `CF=1`
//! runs them channels-first, `M` pixels of one image, as pointwise convolutions do; `CONV=1`
//! times the convolutions of ResNet-50 and EfficientNet-Lite0 at batch 1 instead, and with `RES=1`
//! adds a residual to each and applies a ReLU after it, as ResNet's last 1x1 of a block does).

use std::hint::black_box;
use std::time::Instant;

use sparsepipe_kernels::{default_kblock, l1d_bytes, Conv2d, Depthwise, Epilogue, Isa, PackedLinear, Residual};

const MS: [usize; 4] = [8, 32, 128, 512];
const KNS: [(usize, usize); 3] = [(768, 768), (768, 3072), (3072, 768)];
const SPARSITIES: [f64; 4] = [0.0, 0.8, 0.9, 0.95];

fn xorshift(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn weight(k: usize, n: usize, sparsity: f64, seed: u64) -> Vec<f32> {
    let mut r = xorshift(seed);
    (0..k * n).map(|_| if r() < sparsity { 0.0 } else { (r() * 2.0 - 1.0) as f32 + 1e-3 }).collect()
}

/// Median seconds per call of `f` over enough repetitions to fill about `budget` seconds.
fn median_secs(mut f: impl FnMut(), budget: f64) -> f64 {
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let reps = ((budget / once) as usize).clamp(5, 2000);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[reps / 2]
}

/// Measured single-core FMA throughput in FLOP/s for `isa`.
fn fma_peak(isa: Isa) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // Twelve independent FMA chains in named registers (an array here was kept in memory and
        // measured half the real peak): enough to cover a 4-cycle latency on two FMA ports.
        macro_rules! fma_loop {
            ($name:ident, $feat:literal, $v:ty, $set1:ident, $fma:ident, $add:ident, $lanes:expr) => {
                #[target_feature(enable = $feat)]
                unsafe fn $name(iters: usize) -> f32 {
                    let (a, b) = ($set1(0.999_999), $set1(1e-7));
                    let (mut x0, mut x1, mut x2, mut x3) = ($set1(0.1), $set1(0.2), $set1(0.3), $set1(0.4));
                    let (mut x4, mut x5, mut x6, mut x7) = ($set1(0.5), $set1(0.6), $set1(0.7), $set1(0.8));
                    let (mut x8, mut x9, mut x10, mut x11) = ($set1(0.9), $set1(1.0), $set1(1.1), $set1(1.2));
                    for _ in 0..iters {
                        x0 = $fma(x0, a, b);
                        x1 = $fma(x1, a, b);
                        x2 = $fma(x2, a, b);
                        x3 = $fma(x3, a, b);
                        x4 = $fma(x4, a, b);
                        x5 = $fma(x5, a, b);
                        x6 = $fma(x6, a, b);
                        x7 = $fma(x7, a, b);
                        x8 = $fma(x8, a, b);
                        x9 = $fma(x9, a, b);
                        x10 = $fma(x10, a, b);
                        x11 = $fma(x11, a, b);
                    }
                    let s = $add($add($add(x0, x1), $add(x2, x3)), $add($add(x4, x5), $add(x6, x7)));
                    let s = $add(s, $add($add(x8, x9), $add(x10, x11)));
                    // SAFETY: a SIMD vector and an array of its lanes have the same size and layout.
                    let v: [f32; $lanes] = unsafe { std::mem::transmute::<$v, [f32; $lanes]>(s) };
                    v.iter().sum()
                }
            };
        }
        fma_loop!(run512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, 16);
        fma_loop!(run256, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, 8);
        let iters = 2_000_000;
        let (run, lanes): (unsafe fn(usize) -> f32, usize) = match isa {
            Isa::Avx512 => (run512, 16),
            Isa::Avx2 => (run256, 8),
            Isa::Portable => return f64::NAN,
        };
        let s = median_secs(
            || {
                // SAFETY: `isa` is only passed when the CPU supports it.
                black_box(unsafe { run(black_box(iters)) });
            },
            0.5,
        );
        (iters * 12 * lanes * 2) as f64 / s
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        f64::NAN
    }
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let isa = Isa::best();
    let threads = std::env::var("SPARSEPIPE_NUM_THREADS").ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(1);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let many = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build().unwrap();
    let peak = one.install(|| fma_peak(isa));
    println!(
        "isa={isa} L1d={} KiB kblock={} measured 1-core FMA peak {:.1} GFLOP/s",
        l1d_bytes() / 1024,
        default_kblock(),
        peak / 1e9
    );
    if std::env::var("CONV").is_ok_and(|v| v == "1") {
        convolutions(isa, peak, filter.as_deref(), &one);
        return;
    }
    println!(
        "{:<22} {:>5} {:>5} {:>10} {:>9} {:>7}{}",
        "shape",
        "kind",
        "M",
        "us/call",
        "GFLOP/s",
        "%peak",
        if threads > 1 { format!(" {:>8}", format!("x{threads}T")) } else { String::new() }
    );
    let list = |var: &str| -> Option<Vec<String>> {
        std::env::var(var).ok().map(|v| v.split(',').map(|x| x.trim().to_string()).collect())
    };
    let channels_first = std::env::var("CF").is_ok_and(|v| v == "1");
    let ms: Vec<usize> = list("MS").map_or(MS.to_vec(), |v| v.iter().filter_map(|x| x.parse().ok()).collect());
    let kns: Vec<(usize, usize)> = list("SHAPES").map_or(KNS.to_vec(), |v| {
        v.iter().filter_map(|x| x.split_once('x').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))).collect()
    });
    for &(k, n) in &kns {
        for &s in &SPARSITIES {
            let name = format!("K{k}xN{n}/s{s:.2}");
            if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let w = weight(k, n, s, (k * 31 + n) as u64);
            let nnz = w.iter().filter(|v| **v != 0.0).count();
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
            let at = |r: usize, c: usize| w[r * n + c];
            let kblock = std::env::var("KBLOCK").ok().and_then(|v| v.parse().ok()).unwrap_or_else(default_kblock);
            let packed = if s > 0.0 {
                PackedLinear::sparse_with_kblock(k, n, at, Epilogue::with_bias(bias), kblock)
            } else {
                PackedLinear::dense(k, n, at, Epilogue::with_bias(bias))
            };
            for &m in &ms {
                let x: Vec<f32> = {
                    let mut r = xorshift(m as u64);
                    (0..m * k).map(|_| r() as f32).collect()
                };
                let mut y = vec![0f32; m * n];
                let flops = 2.0 * (nnz + n) as f64 * m as f64;
                // Channels-first (`CF=1`): the M columns of one image, as 1x1 convolutions read them.
                let (outer, inner) = if channels_first { (1, m) } else { (m, 1) };
                let t1 =
                    one.install(|| median_secs(|| packed.run(isa, black_box(&x), outer, inner, &mut y).unwrap(), 0.3));
                let gf = flops / t1 / 1e9;
                let mut line = format!(
                    "{name:<22} {:>5} {m:>5} {:>10.1} {gf:>9.1} {:>6.1}%",
                    packed.kind(),
                    t1 * 1e6,
                    100.0 * gf * 1e9 / peak
                );
                if threads > 1 {
                    let tn = many
                        .install(|| median_secs(|| packed.run(isa, black_box(&x), outer, inner, &mut y).unwrap(), 0.3));
                    line += &format!(" {:>8.2}", t1 / tn);
                }
                println!("{line}");
            }
        }
    }
}

/// A convolution layer: name, input `[C, H, W]`, output channels (0: depthwise), kernel, stride.
type ConvShape = (&'static str, (usize, usize, usize), usize, usize, usize);

/// Convolutions of ResNet-50 and EfficientNet-Lite0 at 224x224 (one of each distinct shape).
const CONVS: [ConvShape; 14] = [
    ("r50.stem7x7", (3, 224, 224), 64, 7, 2),
    ("r50.l1.3x3", (64, 56, 56), 64, 3, 1),
    ("r50.l1.1x1up", (64, 56, 56), 256, 1, 1),
    ("r50.l2.3x3s2", (128, 56, 56), 128, 3, 2),
    ("r50.l3.3x3", (256, 14, 14), 256, 3, 1),
    ("r50.l4.3x3", (512, 7, 7), 512, 3, 1),
    ("r50.l4.1x1up", (512, 7, 7), 2048, 1, 1),
    ("effl0.stem3x3s2", (3, 224, 224), 32, 3, 2),
    ("effl0.dw3x3", (32, 112, 112), 0, 3, 1),
    ("effl0.dw3x3s2", (96, 112, 112), 0, 3, 2),
    ("effl0.dw5x5s2", (144, 56, 56), 0, 5, 2),
    ("effl0.dw3x3.14", (480, 14, 14), 0, 3, 1),
    ("effl0.dw5x5.7", (1152, 7, 7), 0, 5, 1),
    ("effl0.1x1.14", (480, 14, 14), 80, 1, 1),
];

/// Times each of [`CONVS`] on one thread (dense and 90% sparse for group-1 convolutions) and
/// prints its GFLOP/s and % of the FMA peak.
fn convolutions(isa: Isa, peak: f64, filter: Option<&str>, pool: &rayon::ThreadPool) {
    let residual = std::env::var("RES").is_ok_and(|v| v == "1");
    println!("{:<22} {:>6} {:>10} {:>9} {:>7}", "convolution", "kind", "us/call", "GFLOP/s", "%peak");
    for (name, (c, h, w), o, k, s) in CONVS {
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let pad = k / 2;
        let g = Conv2d::new((c, h, w), (k, k), (s, s), (1, 1), (pad, pad), (pad, pad)).unwrap();
        let x: Vec<f32> = {
            let mut r = xorshift(7);
            (0..c * h * w).map(|_| r() as f32).collect()
        };
        let line = |kind: &str, macs: f64, secs: f64| {
            let gf = 2.0 * macs / secs / 1e9;
            println!("{name:<22} {kind:>6} {:>10.1} {gf:>9.1} {:>6.1}%", secs * 1e6, 100.0 * gf * 1e9 / peak);
        };
        if o == 0 {
            let wts = weight(c, k * k, 0.0, 3);
            let dw = Depthwise::new(c, (k, k), &wts, Epilogue::with_bias(vec![0.1; c])).unwrap();
            let mut y = vec![0f32; c * g.cols()];
            let secs = pool.install(|| median_secs(|| dw.run(isa, &g, black_box(&x), 1, None, &mut y).unwrap(), 0.3));
            line("dw", (c * k * k * g.cols()) as f64, secs);
            continue;
        }
        for sparsity in [0.0, 0.9] {
            let wts = weight(g.k(), o, sparsity, 5);
            let nnz = wts.iter().filter(|v| **v != 0.0).count();
            let at = |r: usize, n: usize| wts[r * o + n];
            let epi = Epilogue::with_bias(vec![0.1; o]);
            let kblock = std::env::var("KBLOCK").ok().and_then(|v| v.parse().ok()).unwrap_or_else(default_kblock);
            let packed = if sparsity > 0.0 {
                PackedLinear::sparse_with_kblock(g.k(), o, at, epi, kblock)
            } else {
                PackedLinear::dense(g.k(), o, at, epi)
            };
            let mut y = vec![0f32; o * g.cols()];
            let addend: Vec<f32> = if residual { (0..y.len()).map(|i| (i % 7) as f32 - 3.0).collect() } else { vec![] };
            let add = residual.then(|| Residual { values: &addend, min: 0.0, max: f32::INFINITY });
            let run = || packed.run_conv(isa, &g, black_box(&x), 1, add, &mut y).unwrap();
            let secs = pool.install(|| median_secs(run, 0.3));
            line(packed.kind(), (nnz * g.cols()) as f64, secs);
        }
    }
}
