//! One shared battery: every ISA path of every kernel against the straight-loop reference.

use proptest::prelude::*;
use sparsepipe_kernels::{
    dense_panel, max_pool, reference_conv, reference_depthwise, reference_linear, reference_max_pool, Activation,
    Conv2d, DenseMatrix, Depthwise, Epilogue, Isa, PackedLinear, Residual,
};

/// Deterministic pseudo-random weights with the requested fraction of exact zeros.
fn weights(k: usize, n: usize, sparsity: f64, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..k * n)
        .map(|_| {
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            if u < sparsity {
                0.0
            } else {
                ((next() % 2001) as f32 - 1000.0) / 700.0
            }
        })
        .collect()
}

fn inputs(len: usize, seed: u64) -> Vec<f32> {
    weights(len, 1, 0.0, seed ^ 0xabcdef)
}

fn check(w: &[f32], k: usize, n: usize, epi: Epilogue, outer: usize, inner: usize, seed: u64) {
    let x = inputs(outer * k * inner, seed);
    let want = reference_linear(w, k, n, &epi, &x, outer, inner);
    let packs = [
        PackedLinear::sparse(k, n, |r, c| w[r * n + c], epi.clone()),
        PackedLinear::dense(k, n, |r, c| w[r * n + c], epi.clone()),
    ];
    for isa in Isa::available() {
        for p in &packs {
            let mut y = vec![f32::NAN; outer * n * inner];
            p.run(isa, &x, outer, inner, &mut y).unwrap();
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                let tol = 1e-4 * b.abs().max(1.0);
                assert!(
                    (a - b).abs() <= tol,
                    "{} {isa} k={k} n={n} outer={outer} inner={inner}: y[{i}] = {a}, want {b}",
                    p.kind()
                );
            }
        }
    }
}

fn epilogue(kind: u8, n: usize, seed: u64) -> Epilogue {
    let bias = inputs(n, seed ^ 77);
    match kind {
        0 => Epilogue::default(),
        1 => Epilogue::with_bias(bias),
        2 => Epilogue { bias: Some(bias), min: 0.0, max: f32::INFINITY, act: Activation::None },
        3 => Epilogue { bias: Some(bias), act: Activation::Gelu, ..Default::default() },
        5 => Epilogue { bias: Some(bias), act: Activation::Silu, ..Default::default() },
        6 => Epilogue { bias: Some(bias), act: Activation::LeakyRelu(0.1), ..Default::default() },
        _ => Epilogue { bias: None, min: 0.0, max: 6.0, act: Activation::None },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn row_major_matches_reference(
        k in prop_oneof![1usize..70, 120usize..400], n in 1usize..70, m in 1usize..140,
        sparsity in prop_oneof![Just(0.0), Just(0.5), Just(0.9), Just(1.0), 0.0f64..1.0],
        epi in 0u8..7, seed in any::<u64>(),
    ) {
        let w = weights(k, n, sparsity, seed);
        check(&w, k, n, epilogue(epi, n, seed), m, 1, seed);
    }

    #[test]
    fn channels_first_matches_reference(
        k in 1usize..40, n in 1usize..40, batch in 1usize..3, hw in 1usize..100,
        sparsity in 0.0f64..1.0, epi in 0u8..7, seed in any::<u64>(),
    ) {
        let w = weights(k, n, sparsity, seed);
        check(&w, k, n, epilogue(epi, n, seed), batch, hw, seed);
    }
}

/// Every ISA and both kinds against the reference convolution, with no addend, an addend, and
/// an addend followed by a ReLU6 clamp.
fn check_conv(g: &Conv2d, o: usize, sparsity: f64, epi: Epilogue, batch: usize, seed: u64) {
    let k = g.k();
    // `[O, K]` as stored by ONNX; the packed matrix is its transpose.
    let w_ok = weights(o, k, sparsity, seed);
    let x = inputs(batch * g.c * g.h * g.w, seed);
    let want = reference_conv(g, &w_ok, o, &epi, &x, batch);
    let add = inputs(want.len(), seed ^ 99);
    let packs = [
        PackedLinear::sparse(k, o, |r, c| w_ok[c * k + r], epi.clone()),
        PackedLinear::dense(k, o, |r, c| w_ok[c * k + r], epi.clone()),
    ];
    for isa in Isa::available() {
        for p in &packs {
            let residuals = [None, Some(Residual::plain(&add)), Some(Residual { values: &add, min: 0.0, max: 6.0 })];
            for r in residuals {
                let mut y = vec![f32::NAN; want.len()];
                p.run_conv(isa, g, &x, batch, r, &mut y).unwrap();
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    let b = r.map_or(*b, |r| (b + r.values[i]).max(r.min).min(r.max));
                    let tol = 1e-4 * b.abs().max(1.0);
                    assert!(
                        (a - b).abs() <= tol,
                        "{} {isa} {g:?} o={o} batch={batch}: y[{i}] = {a}, want {b}",
                        p.kind()
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn convolutions_match_reference(
        c in 1usize..12, o in 1usize..20, h in 1usize..14, w in 1usize..14,
        k in prop_oneof![Just(1usize), Just(3), Just(5), Just(7)], kw_same in any::<bool>(),
        sh in 1usize..3, sw in 1usize..3, dil in 1usize..3,
        pads in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        sparsity in prop_oneof![Just(0.0), Just(0.5), Just(0.9)], epi in 0u8..7,
        batch in 1usize..4, seed in any::<u64>(),
    ) {
        let kw = if kw_same { k } else { 1 + (k + 1) % 4 };
        let (pt, pl, pb, pr) = pads;
        if let Ok(g) = Conv2d::new((c, h, w), (k, kw), (sh, sw), (dil, 1), (pt, pl), (pb, pr)) {
            check_conv(&g, o, sparsity, epilogue(epi, o, seed), batch, seed);
        }
    }
}

/// Every ISA of the depthwise kernel against its reference, with no addend, an addend, and an
/// addend followed by a ReLU6 clamp.
fn check_depthwise(g: &Conv2d, epi: Epilogue, batch: usize, seed: u64) {
    let w = weights(g.c, g.kh * g.kw, 0.0, seed);
    let x = inputs(batch * g.c * g.h * g.w, seed);
    let want = reference_depthwise(g, &w, &epi, &x, batch);
    let add = inputs(want.len(), seed ^ 98);
    let dw = Depthwise::new(g.c, (g.kh, g.kw), &w, epi).unwrap();
    for isa in Isa::available() {
        let residuals = [None, Some(Residual::plain(&add)), Some(Residual { values: &add, min: 0.0, max: 6.0 })];
        for r in residuals {
            let mut y = vec![f32::NAN; want.len()];
            dw.run(isa, g, &x, batch, r, &mut y).unwrap();
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                let b = r.map_or(*b, |r| (b + r.values[i]).max(r.min).min(r.max));
                let tol = 1e-4 * b.abs().max(1.0);
                assert!((a - b).abs() <= tol, "depthwise {isa} {g:?} batch={batch}: y[{i}] = {a}, want {b}");
            }
        }
    }
}

#[test]
fn convolution_tiles_run_across_the_images_of_a_batch() {
    // 7x7 and 5x3 images: 64-pixel tiles hold pieces of several images, on one thread and on
    // three (channel ranges split the tiles).
    let cases = [
        (Conv2d::new((5, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)).unwrap(), 11, 16),
        (Conv2d::new((9, 7, 7), (1, 1), (1, 1), (1, 1), (0, 0), (0, 0)).unwrap(), 20, 5),
        (Conv2d::new((4, 5, 3), (3, 3), (2, 1), (1, 1), (1, 0), (1, 2)).unwrap(), 7, 9),
    ];
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (i, (g, o, batch)) in cases.iter().enumerate() {
                for sparsity in [0.0, 0.9] {
                    check_conv(g, *o, sparsity, epilogue(5, *o, i as u64), *batch, i as u64);
                }
            }
        });
    }
}

#[test]
fn repeated_convolutions_of_one_geometry_see_only_their_own_input() {
    // The padded phases are kept between calls of one geometry and batch on a thread: calls with
    // other inputs, other batches and other geometries in between must not leak into the result.
    let a = Conv2d::new((3, 9, 11), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)).unwrap();
    let b = Conv2d::new((3, 9, 11), (3, 3), (2, 2), (1, 1), (0, 1), (1, 0)).unwrap();
    let w = weights(5, a.k(), 0.0, 1);
    let epi = Epilogue::default();
    let p = PackedLinear::dense(a.k(), 5, |r, c| w[c * a.k() + r], epi.clone());
    for (i, (g, batch)) in [(a, 2), (a, 2), (b, 2), (a, 2), (a, 1), (a, 2)].into_iter().enumerate() {
        let x: Vec<f32> = inputs(batch * g.c * g.h * g.w, 40 + i as u64).iter().map(|v| v + 10.0).collect();
        let want = reference_conv(&g, &w, 5, &epi, &x, batch);
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; want.len()];
            p.run_conv(isa, &g, &x, batch, None, &mut y).unwrap();
            for (j, (got, want)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "call {i} {isa}: y[{j}] = {got}, want {want}"
                );
            }
        }
    }
}

/// Every ISA of the max pool against its reference, exactly (a maximum is never rounded).
fn check_max_pool(g: &Conv2d, batch: usize, seed: u64) {
    let x = inputs(batch * g.c * g.h * g.w, seed);
    let want = reference_max_pool(g, &x, batch);
    for isa in Isa::available() {
        let mut y = vec![f32::NAN; want.len()];
        max_pool(isa, g, &x, batch, &mut y).unwrap();
        assert_eq!(y, want, "max pool {isa} {g:?} batch={batch}");
    }
}

#[test]
fn max_pools_of_vision_models_match_in_parallel() {
    let cases = [
        // YOLOv3-tiny: 2x2 stride 2, and 2x2 stride 1 padded after (the size is kept).
        Conv2d::new((16, 52, 52), (2, 2), (2, 2), (1, 1), (0, 0), (0, 0)).unwrap(),
        Conv2d::new((32, 13, 13), (2, 2), (1, 1), (1, 1), (0, 0), (1, 1)).unwrap(),
        // ResNet's 3x3 stride 2 padded stem pool, on an odd image.
        Conv2d::new((8, 57, 57), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)).unwrap(),
        // YOLOv8's SPPF: 5x5 stride 1 padded 2.
        Conv2d::new((24, 10, 10), (5, 5), (1, 1), (1, 1), (2, 2), (2, 2)).unwrap(),
    ];
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (i, g) in cases.iter().enumerate() {
                check_max_pool(g, 1 + i % 2, i as u64);
            }
        });
    }
    let g = cases[0];
    let mut y = vec![0.0; 10];
    assert!(max_pool(Isa::Portable, &g, &[0.0; 5], 1, &mut y).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn max_pools_match_reference(
        c in 1usize..6, h in 1usize..14, w in 1usize..14, k in 1usize..6, kw in 1usize..4,
        sh in 1usize..4, sw in 1usize..3, dil in 1usize..3,
        pads in (0usize..3, 0usize..3, 0usize..3, 0usize..3), batch in 1usize..3, seed in any::<u64>(),
    ) {
        let (pt, pl, pb, pr) = pads;
        if let Ok(g) = Conv2d::new((c, h, w), (k, kw), (sh, sw), (dil, 1), (pt, pl), (pb, pr)) {
            check_max_pool(&g, batch, seed);
        }
    }

    #[test]
    fn depthwise_convolutions_match_reference(
        c in 1usize..10, h in 1usize..14, w in 1usize..14,
        k in prop_oneof![Just(1usize), Just(3), Just(5), Just(7)], kw_same in any::<bool>(),
        sh in 1usize..3, sw in 1usize..4, dil in 1usize..3,
        pads in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        epi in 0u8..7, batch in 1usize..4, seed in any::<u64>(),
    ) {
        let kw = if kw_same { k } else { 1 + (k + 1) % 4 };
        let (pt, pl, pb, pr) = pads;
        if let Ok(g) = Conv2d::new((c, h, w), (k, kw), (sh, sw), (1, dil), (pt, pl), (pb, pr)) {
            check_depthwise(&g, epilogue(epi, c, seed), batch, seed);
        }
    }
}

#[test]
fn depthwise_shapes_of_vision_models_match_in_parallel() {
    // EfficientNet's 3x3 and 5x5 depthwise convolutions, stride 1 and 2, even and odd images;
    // wide rows and a larger stride and dilation.
    let cases = [
        Conv2d::new((24, 28, 28), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)).unwrap(),
        Conv2d::new((16, 29, 27), (3, 3), (2, 2), (1, 1), (0, 0), (1, 1)).unwrap(),
        Conv2d::new((40, 14, 14), (5, 5), (2, 2), (1, 1), (1, 1), (2, 2)).unwrap(),
        Conv2d::new((96, 7, 7), (5, 5), (1, 1), (1, 1), (2, 2), (2, 2)).unwrap(),
        // Rows wide enough for the vectorised stride-2 column split, with a tail after it.
        Conv2d::new((8, 67, 75), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)).unwrap(),
        // Stride 3 and dilation 2: the general column split.
        Conv2d::new((4, 40, 50), (3, 3), (3, 3), (2, 2), (1, 2), (2, 1)).unwrap(),
    ];
    for threads in [1, 2, 5] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (i, g) in cases.iter().enumerate() {
                check_depthwise(g, epilogue(4, g.c, i as u64), 1 + i % 3, i as u64);
            }
        });
    }
    let err = Depthwise::new(24, (3, 3), &[0.0; 5], Epilogue::default()).unwrap_err();
    assert!(err.to_string().contains("24x3x3"), "{err}");
    let dw = Depthwise::new(24, (3, 3), &[0.0; 24 * 9], Epilogue::default()).unwrap();
    let err = dw.run(Isa::Portable, &cases[2], &[0.0; 40 * 196], 1, None, &mut [0.0; 40 * 49]).unwrap_err();
    assert!(err.to_string().contains("40 channels"), "{err}");
}

#[test]
fn convolution_shapes_of_vision_models_match_in_parallel() {
    // A ResNet stem (7x7/2), 3x3 bottleneck convolutions (stride 1 and 2), a 1x1/2 downsample,
    // odd images and a 1x1 image, on 1, 2 and 5 threads (few tiles: channels are split too).
    let cases = [
        (Conv2d::new((3, 31, 29), (7, 7), (2, 2), (1, 1), (3, 3), (3, 3)).unwrap(), 24),
        (Conv2d::new((32, 14, 14), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)).unwrap(), 48),
        (Conv2d::new((32, 13, 13), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)).unwrap(), 40),
        (Conv2d::new((40, 7, 9), (1, 1), (2, 2), (1, 1), (0, 0), (0, 0)).unwrap(), 64),
        (Conv2d::new((64, 1, 1), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)).unwrap(), 96),
    ];
    for threads in [1, 2, 5] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (i, (g, o)) in cases.iter().enumerate() {
                for s in [0.0, 0.9] {
                    check_conv(g, *o, s, epilogue(2, *o, i as u64), 1 + i % 2, i as u64);
                }
            }
        });
    }
}

#[test]
fn convolution_errors_name_the_mismatch() {
    let g = Conv2d::new((2, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)).unwrap();
    let p = PackedLinear::dense(g.k() + 1, 3, |_, _| 1.0, Epilogue::default());
    let err = p.run_conv(Isa::Portable, &g, &[0.0; 32], 1, None, &mut [0.0; 48]).unwrap_err();
    assert!(err.to_string().contains("taps"), "{err}");
    let p = PackedLinear::dense(g.k(), 3, |_, _| 1.0, Epilogue::default());
    let err = p.run_conv(Isa::Portable, &g, &[0.0; 31], 1, None, &mut [0.0; 48]).unwrap_err();
    assert!(err.to_string().contains("input has 31 values"), "{err}");
    let err = p.run_conv(Isa::Portable, &g, &[0.0; 32], 1, None, &mut [0.0; 47]).unwrap_err();
    assert!(err.to_string().contains("output has 47 values"), "{err}");
}

#[test]
fn single_row_uses_row_path_and_matches() {
    for (k, n) in [(1, 1), (17, 3), (768, 96), (300, 257)] {
        for s in [0.0, 0.8, 0.97] {
            let w = weights(k, n, s, k as u64 * 31 + n as u64);
            for m in 1..5 {
                check(&w, k, n, epilogue(1, n, 5), m, 1, 9);
            }
        }
    }
}

#[test]
fn all_zero_matrix_gives_bias() {
    let (k, n) = (33, 21);
    let w = vec![0.0; k * n];
    check(&w, k, n, epilogue(1, n, 3), 19, 1, 1);
    check(&w, k, n, epilogue(0, n, 3), 2, 50, 1);
}

#[test]
fn empty_rows_and_columns() {
    let (k, n) = (40, 30);
    let mut w = weights(k, n, 0.3, 4);
    for c in 0..n {
        w[5 * n + c] = 0.0; // an all-zero input channel
    }
    for r in 0..k {
        w[r * n + 7] = 0.0; // an all-zero output channel
    }
    check(&w, k, n, epilogue(1, n, 3), 37, 1, 2);
}

#[test]
fn large_shapes_run_in_parallel_and_match() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    pool.install(|| {
        let (k, n) = (256, 320);
        for s in [0.0, 0.9] {
            let w = weights(k, n, s, 11);
            check(&w, k, n, epilogue(2, n, 1), 200, 1, 3);
            check(&w, k, n, epilogue(1, n, 1), 2, 196, 3);
            check(&w, k, n, epilogue(1, n, 1), 1, 256, 3);
        }
        // Short inputs with enough work to split by output channels.
        let (k, n) = (768, 520);
        for s in [0.0, 0.8] {
            let w = weights(k, n, s, 12);
            for m in [5, 20, 33] {
                check(&w, k, n, epilogue(3, n, 2), m, 1, 4);
            }
        }
    });
    // Two threads: each thread's channels span several output chunks, on short and long inputs.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        let (k, n) = (512, 700);
        for s in [0.0, 0.8] {
            let w = weights(k, n, s, 13);
            for m in [20, 130] {
                check(&w, k, n, epilogue(1, n, 2), m, 1, 5);
            }
        }
    });
}

#[test]
fn many_threads_split_few_rows_over_tiles_and_channels() {
    // More threads than tiles: each tile's channels are split as well (a grid of jobs), for
    // both kinds, dense and sparse, and rows off the vector width.
    let (k, n) = (384, 640);
    for threads in [5, 16] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for s in [0.0, 0.9] {
                let w = weights(k, n, s, 14);
                for m in [3, 31, 64, 100, 129] {
                    check(&w, k, n, epilogue(1, n, 3), m, 1, 6);
                }
            }
        });
    }
}

#[test]
fn dense_panels_of_six_and_eight_match_on_every_isa() {
    // Both panel widths on every ISA (each CPU packs for its own), K over several L1 blocks and
    // shorter than one, channel counts off the panel width, every epilogue, row-major (1-8 rows
    // take the narrow path on AVX2) and channels-first, one and two threads.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for &(k, n) in &[(1100usize, 29usize), (40, 50), (300, 7), (0, 9)] {
        let w = weights(k, n, 0.0, 21);
        for kind in 0..7u8 {
            let epi = epilogue(kind, n, 22);
            for panel in [6, 8] {
                let packed =
                    PackedLinear::Dense(DenseMatrix::with_panel(k, n, |r, c| w[r * n + c], epi.clone(), panel));
                for (outer, inner) in [(1, 1), (2, 1), (5, 1), (8, 1), (17, 1), (64, 1), (100, 1), (3, 37)] {
                    let x = inputs(outer * k * inner, 23);
                    let want = reference_linear(&w, k, n, &epi, &x, outer, inner);
                    for isa in Isa::available() {
                        let mut y = vec![f32::NAN; outer * n * inner];
                        pool.install(|| packed.run(isa, &x, outer, inner, &mut y).unwrap());
                        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                                "panel {panel} {isa} k={k} n={n} {outer}x{inner} epilogue {kind}: y[{i}] = {a}, want {b}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert_eq!(dense_panel(Isa::Avx2), 6);
    assert_eq!(dense_panel(Isa::Portable), 8);
}

#[test]
fn zero_sized_calls_are_no_ops() {
    let w = weights(8, 8, 0.5, 1);
    let p = PackedLinear::sparse(8, 8, |r, c| w[r * 8 + c], Epilogue::default());
    let mut y: Vec<f32> = vec![];
    p.run(Isa::Portable, &[], 0, 1, &mut y).unwrap();
    p.run(Isa::Portable, &[], 3, 0, &mut y).unwrap();
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let w = weights(8, 4, 0.5, 1);
    let p = PackedLinear::dense(8, 4, |r, c| w[r * 4 + c], Epilogue::default());
    let mut y = vec![0.0; 4];
    let err = p.run(Isa::Portable, &[0.0; 7], 1, 1, &mut y).unwrap_err();
    assert!(err.to_string().contains("expected 1x8x1"), "{err}");
    let mut y = vec![0.0; 3];
    assert!(p.run(Isa::Portable, &[0.0; 8], 1, 1, &mut y).is_err());
}

#[test]
fn nan_propagates_without_clamp() {
    let w = [1.0f32; 4];
    let p = PackedLinear::sparse(2, 2, |r, c| w[r * 2 + c], Epilogue::default());
    for isa in Isa::available() {
        let mut y = vec![0.0; 2 * 20];
        let mut x = vec![1.0; 2 * 20];
        x[0] = f32::NAN;
        p.run(isa, &x, 20, 1, &mut y).unwrap();
        assert!(y[0].is_nan() && y[1].is_nan(), "{isa}: {:?}", &y[..2]);
        assert_eq!(y[2], 2.0);
    }
}

#[test]
fn an_addend_is_added_after_the_epilogue_on_every_path() {
    // Serial, tile-parallel and channel-parallel row-major calls, and channels-first.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let (k, n) = (300, 520);
    for sparse in [true, false] {
        let w = weights(k, n, if sparse { 0.85 } else { 0.0 }, 21);
        let epi = epilogue(3, n, 4);
        let p = if sparse {
            PackedLinear::sparse(k, n, |r, c| w[r * n + c], epi.clone())
        } else {
            PackedLinear::dense(k, n, |r, c| w[r * n + c], epi.clone())
        };
        for (outer, inner) in [(3, 1), (30, 1), (300, 1), (2, 37)] {
            let x = inputs(outer * k * inner, 6);
            let add = inputs(outer * n * inner, 7);
            for threads in [1, 2] {
                let run = |a: Option<&[f32]>| {
                    let mut y = vec![f32::NAN; outer * n * inner];
                    let mut go = || p.run_add(Isa::best(), &x, outer, inner, a, &mut y).unwrap();
                    if threads == 1 {
                        go()
                    } else {
                        pool.install(go)
                    }
                    y
                };
                let (plain, summed) = (run(None), run(Some(&add)));
                for (i, ((s, p), a)) in summed.iter().zip(&plain).zip(&add).enumerate() {
                    assert_eq!(s.to_bits(), (p + a).to_bits(), "{sparse} {outer}x{inner} {threads}T: y[{i}]");
                }
            }
        }
        let mut y = vec![0f32; n];
        let err = p.run_add(Isa::Portable, &inputs(k, 1), 1, 1, Some(&[0.0; 3]), &mut y).unwrap_err();
        assert!(err.to_string().contains("addend"), "{err}");
    }
}

#[test]
fn a_chain_equals_its_two_calls() {
    // Every kind pairing and ISA; serial, tile-parallel and channel-parallel (few rows) splits;
    // an intermediate over several chunks and sparse blocks, and row counts off the tile width.
    // On one thread both split the rows alike and agree bit for bit; on two the chain may split
    // them where the separate calls would not (its work is their sum), which only reorders sums.
    let pools = [1, 2].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap());
    let (k, mid, n) = (96, 600, 72);
    let w1 = weights(k, mid, 0.8, 31);
    let w2 = weights(mid, n, 0.9, 32);
    let (e1, e2) = (epilogue(3, mid, 5), epilogue(1, n, 6));
    let firsts = [
        PackedLinear::sparse(k, mid, |r, c| w1[r * mid + c], e1.clone()),
        PackedLinear::dense(k, mid, |r, c| w1[r * mid + c], e1.clone()),
    ];
    let seconds = [
        PackedLinear::sparse(mid, n, |r, c| w2[r * n + c], e2.clone()),
        PackedLinear::dense(mid, n, |r, c| w2[r * n + c], e2.clone()),
    ];
    for isa in Isa::available() {
        for a in &firsts {
            for b in &seconds {
                for rows in [1, 3, 17, 40, 129, 300] {
                    let x = inputs(rows * k, rows as u64);
                    let add = inputs(rows * n, 9);
                    for threads in [1, 2] {
                        for addend in [None, Some(&add[..])] {
                            let on_pool = |f: &mut (dyn FnMut() + Send)| pools[threads - 1].install(f);
                            let mut m = vec![f32::NAN; rows * mid];
                            let mut want = vec![f32::NAN; rows * n];
                            on_pool(&mut || {
                                a.run(isa, &x, rows, 1, &mut m).unwrap();
                                b.run_add(isa, &m, rows, 1, addend, &mut want).unwrap();
                            });
                            let mut got = vec![f32::NAN; rows * n];
                            on_pool(&mut || a.run_chain(b, isa, &x, rows, addend, &mut got).unwrap());
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                let ok = if threads == 1 {
                                    g.to_bits() == w.to_bits()
                                } else {
                                    (g - w).abs() <= 1e-5 * w.abs().max(1.0)
                                };
                                assert!(
                                    ok,
                                    "{}->{} {isa} rows={rows} {threads}T add={}: y[{i}] = {g}, want {w}",
                                    a.kind(),
                                    b.kind(),
                                    addend.is_some()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    let mut y = vec![0f32; n];
    let err = seconds[0].run_chain(&firsts[0], Isa::Portable, &inputs(mid, 1), 1, None, &mut y).unwrap_err();
    assert!(err.to_string().contains("input channels"), "{err}");
    let err = firsts[0].run_chain(&seconds[0], Isa::Portable, &inputs(k, 1), 2, None, &mut y).unwrap_err();
    assert!(err.to_string().contains("input has"), "{err}");
    let mut y2 = vec![0f32; 2 * n];
    let err =
        firsts[0].run_chain(&seconds[0], Isa::Portable, &inputs(2 * k, 1), 2, Some(&[0.0; 3]), &mut y2).unwrap_err();
    assert!(err.to_string().contains("addend"), "{err}");
}

#[test]
fn concatenated_weights_give_each_part() {
    // Q/K/V-like parts with and without a bias, channel counts off the dense panel width,
    // K over several sparse blocks; row-major and channels-first, serial and parallel. On one
    // thread every call splits its rows alike and the sums agree bit for bit; on two the split
    // follows each call's work (the merged weight's and each part's differ), which only reorders
    // the sums.
    let pools = [1, 2].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap());
    for &(k, ns, sparsity) in &[(600usize, [48usize, 13, 40], 0.85), (64, [8, 8, 8], 0.0), (300, [20, 1, 77], 0.5)] {
        let ws: Vec<Vec<f32>> = ns.iter().enumerate().map(|(i, &n)| weights(k, n, sparsity, i as u64 + 3)).collect();
        let epis: Vec<Epilogue> = ns
            .iter()
            .enumerate()
            .map(|(i, &n)| if i == 1 { Epilogue::default() } else { Epilogue::with_bias(inputs(n, i as u64)) })
            .collect();
        let ntot: usize = ns.iter().sum();
        for sparse in [true, false] {
            let parts: Vec<PackedLinear> = (0..3)
                .map(|i| {
                    let (w, n) = (&ws[i], ns[i]);
                    if sparse {
                        PackedLinear::sparse(k, n, |r, c| w[r * n + c], epis[i].clone())
                    } else {
                        PackedLinear::dense(k, n, |r, c| w[r * n + c], epis[i].clone())
                    }
                })
                .collect();
            let refs: Vec<&PackedLinear> = parts.iter().collect();
            let merged = PackedLinear::concat_n(&refs).expect("same kind, K and epilogue");
            assert_eq!((merged.kind(), merged.k(), merged.n()), (parts[0].kind(), k, ntot));
            for (outer, inner) in [(7, 1), (300, 1), (2, 19)] {
                let x = inputs(outer * k * inner, 5);
                for (isa, threads) in Isa::available().into_iter().flat_map(|i| [(i, 1), (i, 2)]) {
                    pools[threads - 1].install(|| {
                        let mut y = vec![f32::NAN; outer * ntot * inner];
                        merged.run(isa, &x, outer, inner, &mut y).unwrap();
                        let mut off = 0;
                        for (p, &n) in parts.iter().zip(&ns) {
                            let mut yp = vec![f32::NAN; outer * n * inner];
                            p.run(isa, &x, outer, inner, &mut yp).unwrap();
                            for o in 0..outer {
                                for c in 0..n {
                                    for i in 0..inner {
                                        let (a, b) = (y[(o * ntot + off + c) * inner + i], yp[(o * n + c) * inner + i]);
                                        let same = if threads == 1 {
                                            a.to_bits() == b.to_bits()
                                        } else {
                                            (a - b).abs() <= 1e-5 * b.abs().max(1.0)
                                        };
                                        assert!(
                                            same,
                                            "{} {isa} {threads}T {outer}x{inner} ch {c}: {a} vs {b}",
                                            p.kind()
                                        );
                                    }
                                }
                            }
                            off += n;
                        }
                    });
                }
            }
        }
    }
    // Different kinds, K or epilogues do not merge.
    let a = PackedLinear::sparse(4, 4, |_, _| 1.0, Epilogue::default());
    let b = PackedLinear::dense(4, 4, |_, _| 1.0, Epilogue::default());
    let c = PackedLinear::sparse(5, 4, |_, _| 1.0, Epilogue::default());
    let d = PackedLinear::sparse(4, 4, |_, _| 1.0, Epilogue { act: Activation::Gelu, ..Default::default() });
    for pair in [[&a, &b], [&a, &c], [&a, &d]] {
        assert!(PackedLinear::concat_n(&pair).is_none());
    }
    assert!(PackedLinear::concat_n(&[]).is_none());
}

mod attention {
    use super::inputs;
    use proptest::prelude::*;
    use sparsepipe_kernels::{attention, reference_attention, AttnAxis, AttnLayout, Isa};

    /// `[batch, seq, heads, depth]` operands as a linear layer writes them; mask `[batch, 1, 1,
    /// keys]` (or `[batch, 1, queries, keys]` when `full_mask`).
    fn bert_layout(b: usize, sq: usize, sk: usize, h: usize, d: usize, full_mask: bool) -> AttnLayout {
        let mask_b = if full_mask { sq * sk } else { sk };
        AttnLayout {
            outer: vec![
                AttnAxis { size: b, q: sq * h * d, k: sk * h * d, v: sk * h * d, mask: mask_b, out: sq * h * d },
                AttnAxis { size: h, q: d, k: d, v: d, mask: 0, out: d },
            ],
            sq,
            sk,
            d,
            dv: d,
            q: (h * d, 1),
            k: (h * d, 1),
            v: (h * d, 1),
            mask: (if full_mask { sk } else { 0 }, 1),
            out: (h * d, 1),
            scale: 1.0 / (d as f32).sqrt(),
            zero_masked_rows: false,
        }
    }

    fn check(l: &AttnLayout, with_mask: bool, seed: u64) {
        let n = |len: usize, s: u64| -> Vec<f32> { inputs(len, seed ^ s).iter().map(|x| x * 3.0).collect() };
        let ext = |f: fn(&AttnAxis) -> usize, rest: &[(usize, usize)]| -> usize {
            l.outer.iter().map(|a| (a.size - 1) * f(a)).sum::<usize>()
                + rest.iter().map(|&(c, s)| (c - 1) * s).sum::<usize>()
                + 1
        };
        let q = n(ext(|a| a.q, &[(l.sq, l.q.0), (l.d, l.q.1)]), 1);
        let k = n(ext(|a| a.k, &[(l.sk, l.k.0), (l.d, l.k.1)]), 2);
        let v = n(ext(|a| a.v, &[(l.sk, l.v.0), (l.dv, l.v.1)]), 3);
        let mut mask = n(ext(|a| a.mask, &[(l.sq, l.mask.0), (l.sk, l.mask.1)]), 4);
        // Some keys masked out the way exporters do it.
        for (i, m) in mask.iter_mut().enumerate() {
            if i % 5 == 3 {
                *m = -10000.0;
            }
        }
        let mask = with_mask.then_some(mask.as_slice());
        let want = reference_attention(l, &q, &k, &v, mask);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; want.len()];
            attention(isa, l, &q, &k, &v, mask, &mut got).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{isa} {l:?}: out[{i}] = {a}, want {b}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_reference(
            b in 1usize..4, sq in 1usize..40, sk in 1usize..70, h in 1usize..4, d in 1usize..40,
            full_mask in any::<bool>(), with_mask in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut l = bert_layout(b, sq, sk, h, d, full_mask);
            if sq != sk {
                // Queries and keys of different lengths: q/out use their own sequence strides.
                l.outer[0].q = sq * h * d;
                l.outer[0].out = sq * h * d;
            }
            check(&l, with_mask, seed);
        }
    }

    #[test]
    fn bert_base_shapes_in_parallel() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| {
            check(&bert_layout(2, 128, 128, 12, 64, false), true, 1);
            check(&bert_layout(1, 7, 7, 12, 64, false), true, 2);
            check(&bert_layout(3, 1, 1, 2, 64, true), true, 3);
        });
    }

    #[test]
    fn head_major_layouts_and_value_depth_differ() {
        // q/k/v as [batch*heads, seq, depth] contiguous, v with its own depth, out transposed.
        let (g, sq, sk, d, dv) = (5, 9, 33, 24, 20);
        let l = AttnLayout {
            outer: vec![AttnAxis { size: g, q: sq * d, k: sk * d, v: sk * dv, mask: 0, out: 1 }],
            sq,
            sk,
            d,
            dv,
            q: (d, 1),
            k: (1, sk),
            v: (dv, 1),
            mask: (0, 0),
            out: (g, g * sq),
            scale: 0.3,
            zero_masked_rows: false,
        };
        check(&l, false, 9);
    }

    #[test]
    fn strided_masks_and_values() {
        // Mask stored keys-first ([keys, queries]), values depth-first ([depth, keys]), keys over
        // two vectors plus a tail, value depth over one vector plus a tail (no query count of 5:
        // the check masks every fifth mask entry, which would mask one query entirely).
        for (sq, sk, dv) in [(6, 40, 20), (3, 16, 16), (7, 17, 33)] {
            let (g, d) = (2, 12);
            let l = AttnLayout {
                outer: vec![AttnAxis { size: g, q: sq * d, k: sk * d, v: sk * dv, mask: sq * sk, out: sq * dv }],
                sq,
                sk,
                d,
                dv,
                q: (d, 1),
                k: (d, 1),
                v: (1, sk),
                mask: (1, sq),
                out: (dv, 1),
                scale: 0.2,
                zero_masked_rows: false,
            };
            check(&l, true, 11);
        }
    }

    #[test]
    fn fully_masked_queries_give_nan_or_zeros_as_asked() {
        let mut l = bert_layout(1, 3, 20, 1, 8, true);
        let q = inputs(3 * 8, 1);
        let kv = inputs(20 * 8, 2);
        let mut mask = vec![0f32; 3 * 20];
        mask[20..40].fill(f32::NEG_INFINITY); // query 1 sees no key
        for isa in Isa::available() {
            for zero in [false, true] {
                l.zero_masked_rows = zero;
                let want = reference_attention(&l, &q, &kv, &kv, Some(&mask));
                let mut got = vec![0f32; want.len()];
                attention(isa, &l, &q, &kv, &kv, Some(&mask), &mut got).unwrap();
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    let same = if b.is_nan() { a.is_nan() } else { (a - b).abs() <= 1e-4 * b.abs().max(1.0) };
                    assert!(same, "{isa} zero={zero}: out[{i}] = {a}, want {b}");
                }
                assert_eq!(got[8..16].iter().all(|x| *x == 0.0), zero, "{isa}");
            }
        }
    }

    #[test]
    fn nan_in_the_mask_gives_nan_on_every_isa() {
        let l = bert_layout(1, 2, 20, 1, 8, true);
        let q = inputs(2 * 8, 1);
        let kv = inputs(20 * 8, 2);
        let mut mask = vec![0f32; 2 * 20];
        mask[3] = f32::NAN; // query 0 only
        for isa in Isa::available() {
            let mut got = vec![0f32; 2 * 8];
            attention(isa, &l, &q, &kv, &kv, Some(&mask), &mut got).unwrap();
            assert!(got[..8].iter().all(|x| x.is_nan()), "{isa}: {:?}", &got[..8]);
            assert!(got[8..].iter().all(|x| x.is_finite()), "{isa}: {:?}", &got[8..]);
        }
    }

    #[test]
    fn overflowing_strides_are_errors() {
        let mut l = bert_layout(1, 1, 1, 1, 1, false);
        l.outer = vec![AttnAxis { size: 3, q: 1 << 63, k: 0, v: 0, mask: 0, out: 1 }];
        let one = [0f32; 1];
        let mut out = [0f32; 3];
        let err = attention(Isa::Portable, &l, &one, &one, &one, None, &mut out).unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");
    }

    #[test]
    fn bad_layouts_are_errors_not_panics() {
        let l = bert_layout(1, 4, 4, 2, 8, false);
        let buf = vec![0f32; 64];
        let mut out = vec![0f32; 63];
        let err = attention(Isa::Portable, &l, &buf, &buf, &buf, None, &mut out).unwrap_err();
        assert!(err.to_string().contains("attention out has 63 values"), "{err}");
        let mut out = vec![0f32; 64];
        let err = attention(Isa::Portable, &l, &buf, &buf, &buf, Some(&buf[..3]), &mut out).unwrap_err();
        assert!(err.to_string().contains("attention mask"), "{err}");
        let mut overlap = l.clone();
        overlap.out = (1, 1);
        let err = attention(Isa::Portable, &overlap, &buf, &buf, &buf, None, &mut out).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
    }
}

mod layer_norm {
    use super::inputs;
    use sparsepipe_kernels::{layer_norm, reference_layer_norm, Isa};

    #[test]
    fn matches_reference_on_every_isa() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (rows, n) in [(1, 1), (3, 7), (5, 16), (4, 33), (128, 768), (200, 384)] {
            let x: Vec<f32> = inputs(rows * n, n as u64).iter().map(|v| v * 4.0 + 1.5).collect();
            let g = inputs(n, 5);
            let b = inputs(n, 6);
            for (gamma, beta) in [(None, None), (Some(&g[..]), Some(&b[..])), (Some(&g[..]), None)] {
                let want = reference_layer_norm(&x, n, gamma, beta, 1e-5);
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; x.len()];
                    pool.install(|| layer_norm(isa, &x, n, gamma, beta, 1e-5, &mut y)).unwrap();
                    for (i, (a, w)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (a - w).abs() <= 1e-4 * w.abs().max(1.0),
                            "{isa} rows={rows} n={n}: y[{i}] = {a}, want {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut y = vec![0f32; 6];
        assert!(layer_norm(Isa::Portable, &[0.0; 6], 4, None, None, 1e-5, &mut y).is_err());
        assert!(layer_norm(Isa::Portable, &[0.0; 6], 3, Some(&[1.0; 2]), None, 1e-5, &mut y).is_err());
        assert!(layer_norm(Isa::Portable, &[0.0; 6], 3, None, None, 1e-5, &mut y[..5]).is_err());
        assert!(layer_norm(Isa::Portable, &[0.0; 6], 3, None, None, 1e-5, &mut y).is_ok());
    }
}

#[test]
fn gelu_epilogue_matches_the_exact_gelu() {
    // Reference GELU from an independent erf series, far from the polynomial's own formula.
    fn erf(x: f64) -> f64 {
        let (mut term, mut sum, mut k) = (x, x, 0.0f64);
        while term.abs() > 1e-17 {
            k += 1.0;
            term *= -x * x / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
    let xs: Vec<f32> = (-600..=600).map(|i| i as f32 / 100.0).collect();
    let w = [1.0f32];
    let epi = Epilogue { act: Activation::Gelu, ..Default::default() };
    let p = PackedLinear::sparse(1, 1, |_, _| w[0], epi.clone());
    let d = PackedLinear::dense(1, 1, |_, _| w[0], epi);
    for isa in Isa::available() {
        for packed in [&p, &d] {
            let mut y = vec![0f32; xs.len()];
            packed.run(isa, &xs, xs.len(), 1, &mut y).unwrap();
            for (x, got) in xs.iter().zip(&y) {
                let x64 = *x as f64;
                let want = 0.5 * x64 * (1.0 + erf(x64 / 2f64.sqrt()));
                assert!(
                    (*got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{isa} gelu({x}) = {got}, want {want}"
                );
            }
        }
    }
}

#[test]
fn silu_and_leaky_relu_epilogues_match_their_definitions() {
    let mut xs: Vec<f32> = (-600..=600).map(|i| i as f32 / 50.0).collect();
    xs.extend([-1e4, -100.0, -88.5, 88.5, 100.0, 1e4]);
    type Reference = fn(f64) -> f64;
    let cases: [(Activation, Reference); 3] = [
        (Activation::Silu, |x| x / (1.0 + (-x).exp())),
        (Activation::LeakyRelu(0.1), |x| if x > 0.0 { x } else { 0.1 * x }),
        (Activation::LeakyRelu(0.0), |x| x.max(0.0)),
    ];
    for (act, reference) in cases {
        let epi = Epilogue { act, ..Default::default() };
        let p = PackedLinear::sparse(1, 1, |_, _| 1.0, epi.clone());
        let d = PackedLinear::dense(1, 1, |_, _| 1.0, epi);
        for isa in Isa::available() {
            for packed in [&p, &d] {
                let mut y = vec![0f32; xs.len()];
                packed.run(isa, &xs, xs.len(), 1, &mut y).unwrap();
                for (x, got) in xs.iter().zip(&y) {
                    let want = reference(*x as f64);
                    assert!(
                        (*got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{isa} {act:?}({x}) = {got}, want {want}"
                    );
                }
            }
        }
    }
}
