//! SpMM benchmark on BERT-base linear-layer shapes.
//!
//! For every `(K, N)` in {768x768, 768x3072, 3072x768}, `M` (tokens) in {1, 16, 128, 512} and
//! weight sparsity in {0, .5, .7, .8, .9, .95} (unstructured, deterministic xorshift zeros) this
//! times `Y[M,N] = X[M,K]·W[K,N] + bias` three ways:
//!
//! * `sparse`: [`PackedLinear::sparse`] with [`Isa::best`],
//! * `dense`:  [`PackedLinear::dense`] with [`Isa::best`],
//! * `tract`:  an optimized tract plan (`EinSum mk,kn->mn` + bias `Add`).
//!
//! All three run on the same rayon pool (`SPARSEPIPE_NUM_THREADS` threads, default: all cores):
//! our kernels inside `pool.install`, tract through `Executor::MultiThread(pool)`.
//! Before a case is timed, the three results are checked against each other and against an
//! f64 reference on a few rows, so a wrong kernel is never timed.
//!
//! Groups are named `spmm/K{K}xN{N}/M{M}/s{sparsity:.2}` with ids `sparse`, `dense`, `tract`;
//! throughput is `M*K*N` elements (dense-equivalent MACs). Filter as usual, e.g.
//! `cargo bench -p sparsepipe-kernels --bench spmm -- 'K768xN768/M128/'`.
//! Setup (packing, tract optimization, checks) is lazy: filtered-out cases cost nothing.

use std::cell::OnceCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::ThreadPool;
use sparsepipe_kernels::{Epilogue, Isa, PackedLinear};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_linalg::multithread::Executor;

const MS: [usize; 4] = [1, 16, 128, 512];
const KNS: [(usize, usize); 3] = [(768, 768), (768, 3072), (3072, 768)];
const SPARSITIES: [f64; 6] = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95];
/// Rows of the output checked against the exact f64 reference (all three are also cross-checked
/// on every element).
const REF_ROWS: usize = 4;

/// Small deterministic PRNG (xorshift64*).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // Avoid the all-zero state and decorrelate nearby seeds.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[-1, 1)`.
    fn sym(&mut self) -> f32 {
        (self.unit() * 2.0 - 1.0) as f32
    }
}

/// Row-major `[K, N]` weight with (about) `sparsity` exact zeros, the rest uniform in `[-1, 1)`.
fn make_weight(k: usize, n: usize, sparsity: f64, seed: u64) -> Vec<f32> {
    let mut rng = XorShift::new(seed);
    (0..k * n)
        .map(|_| {
            if rng.unit() < sparsity {
                0.0
            } else {
                let v = rng.sym();
                if v == 0.0 {
                    0.5
                } else {
                    v
                }
            }
        })
        .collect()
}

fn make_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift::new(seed);
    (0..len).map(|_| rng.sym()).collect()
}

fn num_threads() -> usize {
    std::env::var("SPARSEPIPE_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// tract plan for `Y = X·W + bias` with `X: [m, k]` as the only input.
fn tract_plan(
    w: &[f32],
    bias: &[f32],
    m: usize,
    k: usize,
    n: usize,
    pool: &Arc<ThreadPool>,
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([m, k]))?;
    let w = model.add_const("w", Tensor::from_shape(&[k, n], w)?)?;
    let b = model.add_const("bias", Tensor::from_shape(&[1, n], bias)?)?;
    let axes: AxesMapping = "mk,kn->mn".parse()?;
    let mm = model.wire_node("matmul", EinSum::new(axes, f32::datum_type()), &[x, w])?;
    let y = model.wire_node("add_bias", tract_core::ops::math::add(), &[mm[0], b])?;
    model.select_output_outlets(&y)?;
    let model = model.into_optimized()?;
    let opts = RunOptions { executor: Some(Executor::MultiThread(pool.clone())), ..Default::default() };
    model.into_runnable_with_options(&opts)
}

fn run_tract(plan: &Arc<TypedRunnableModel>, x: &Tensor) -> TValue {
    let mut out = plan.run(tvec!(x.clone().into_tvalue())).expect("tract run");
    out.remove(0)
}

fn tract_to_vec(t: &TValue) -> Vec<f32> {
    t.to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect()
}

/// Everything one case needs, built on first use.
struct Case {
    x: Vec<f32>,
    x_tensor: Tensor,
    sparse: PackedLinear,
    dense: PackedLinear,
    plan: Arc<TypedRunnableModel>,
}

fn check_close(what: &str, got: &[f32], want: &[f32], label: &str) {
    assert_eq!(got.len(), want.len(), "{label}: {what} length");
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let d = (g - r).abs();
        let tol = 1e-3 * r.abs().max(1.0);
        // `!(d <= tol)` also catches NaN.
        if d.is_nan() || d > tol {
            panic!("{label}: {what} differs at {i}: got {g}, want {r} (|diff| {d} > tol {tol})");
        }
    }
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        label: &str,
        m: usize,
        k: usize,
        n: usize,
        sparsity: f64,
        seed: u64,
        isa: Isa,
        pool: &Arc<ThreadPool>,
    ) -> Case {
        let w = make_weight(k, n, sparsity, seed);
        let bias = make_vec(n, seed ^ 0xB1A5);
        let x = make_vec(m * k, seed ^ 0x0051_2345);
        let epi = Epilogue::with_bias(bias.clone());
        let wf = |r: usize, c: usize| w[r * n + c];
        let sparse = PackedLinear::sparse(k, n, wf, epi.clone());
        let dense = PackedLinear::dense(k, n, wf, epi.clone());
        let plan = tract_plan(&w, &bias, m, k, n, pool).unwrap_or_else(|e| panic!("{label}: tract plan: {e:?}"));
        let x_tensor = Tensor::from_shape(&[m, k], &x).expect("x tensor");

        // Correctness gate: all three must agree before anything is timed.
        let mut ys = vec![0f32; m * n];
        let mut yd = vec![0f32; m * n];
        pool.install(|| sparse.run(isa, &x, m, 1, &mut ys)).expect("sparse run");
        pool.install(|| dense.run(isa, &x, m, 1, &mut yd)).expect("dense run");
        let yt = tract_to_vec(&run_tract(&plan, &x_tensor));
        // Exact reference on a few rows (full f64 reference would dominate the setup time).
        let rows = m.min(REF_ROWS);
        let mut yr = vec![0f32; rows * n];
        for (i, out) in yr.chunks_mut(n).enumerate() {
            let xr = &x[i * k..(i + 1) * k];
            let mut acc: Vec<f64> = bias.iter().map(|&b| b as f64).collect();
            for (r, &xv) in xr.iter().enumerate() {
                for (a, &wv) in acc.iter_mut().zip(&w[r * n..(r + 1) * n]) {
                    *a += xv as f64 * wv as f64;
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a as f32;
            }
        }
        check_close("tract vs f64 reference", &yt[..rows * n], &yr, label);
        check_close("sparse vs f64 reference", &ys[..rows * n], &yr, label);
        check_close("dense vs f64 reference", &yd[..rows * n], &yr, label);
        check_close("sparse vs tract", &ys, &yt, label);
        check_close("dense vs tract", &yd, &yt, label);

        Case { x, x_tensor, sparse, dense, plan }
    }
}

fn bench_spmm(c: &mut Criterion) {
    let threads = num_threads();
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("spmm-bench-{i}"))
            .build()
            .expect("rayon pool"),
    );
    let isa = Isa::best();
    eprintln!("spmm bench: isa={isa}, threads={threads} (SPARSEPIPE_NUM_THREADS)");

    let mut seed = 1u64;
    for &(k, n) in &KNS {
        for &m in &MS {
            for &s in &SPARSITIES {
                seed += 1;
                let case_seed = seed;
                let name = format!("spmm/K{k}xN{n}/M{m}/s{s:.2}");
                let case: OnceCell<Case> = OnceCell::new();
                let get = || case.get_or_init(|| Case::new(&name, m, k, n, s, case_seed, isa, &pool));

                let mut g = c.benchmark_group(&name);
                g.throughput(Throughput::Elements((m * k * n) as u64));

                g.bench_function("sparse", |b| {
                    let cs = get();
                    let mut y = vec![0f32; m * n];
                    b.iter(|| {
                        pool.install(|| cs.sparse.run(isa, black_box(&cs.x), m, 1, &mut y)).unwrap();
                        black_box(&y);
                    })
                });
                g.bench_function("dense", |b| {
                    let cs = get();
                    let mut y = vec![0f32; m * n];
                    b.iter(|| {
                        pool.install(|| cs.dense.run(isa, black_box(&cs.x), m, 1, &mut y)).unwrap();
                        black_box(&y);
                    })
                });
                g.bench_function("tract", |b| {
                    let cs = get();
                    b.iter(|| black_box(run_tract(&cs.plan, black_box(&cs.x_tensor))))
                });
                g.finish();
            }
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_spmm
}
criterion_main!(benches);
