//! One shared battery: every ISA path of every kernel against the straight-loop reference.

use proptest::prelude::*;
use sparsepipe_kernels::{reference_linear, Epilogue, Isa, PackedLinear};

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
        2 => Epilogue { bias: Some(bias), min: 0.0, max: f32::INFINITY },
        _ => Epilogue { bias: None, min: 0.0, max: 6.0 },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn row_major_matches_reference(
        k in prop_oneof![1usize..70, 120usize..400], n in 1usize..70, m in 1usize..140,
        sparsity in prop_oneof![Just(0.0), Just(0.5), Just(0.9), Just(1.0), 0.0f64..1.0],
        epi in 0u8..4, seed in any::<u64>(),
    ) {
        let w = weights(k, n, sparsity, seed);
        check(&w, k, n, epilogue(epi, n, seed), m, 1, seed);
    }

    #[test]
    fn channels_first_matches_reference(
        k in 1usize..40, n in 1usize..40, batch in 1usize..3, hw in 1usize..100,
        sparsity in 0.0f64..1.0, epi in 0u8..4, seed in any::<u64>(),
    ) {
        let w = weights(k, n, sparsity, seed);
        check(&w, k, n, epilogue(epi, n, seed), batch, hw, seed);
    }
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
    });
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
