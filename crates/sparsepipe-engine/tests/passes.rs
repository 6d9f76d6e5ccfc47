//! The weight-matmul, residual and chain passes on generated graphs: every `EinSum` layout the
//! exporters produce (data or weight first, transposed weights, batch axes, several contracted
//! axes, contracted axes in the middle, squeezed unit axes), run with the pass off (tract's plan)
//! and on (our op), giving the same outputs; layouts the kernels do not take stay on tract.

use std::sync::Arc;

use sparsepipe_engine::passes::weight_matmul::{self, Config, DenseBackend};
use sparsepipe_engine::passes::{chain, residual};
use sparsepipe_engine::{Isa, Kernel, LayerReport, RunsOn};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

/// Values in [-1, 1), fixed by `seed`; with `zero_every` > 0 only every `zero_every`-th is non-zero.
fn values(len: usize, seed: usize, zero_every: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            if zero_every > 0 && !(i * 7 + seed).is_multiple_of(zero_every) {
                0.0
            } else {
                ((i * 7919 + seed * 104_729) % 2000) as f32 / 1000.0 - 1.0
            }
        })
        .collect()
}

fn tensor(shape: &[usize], seed: usize, zero_every: usize) -> Tensor {
    Tensor::from_shape(shape, &values(shape.iter().product(), seed, zero_every)).unwrap()
}

/// One pool of two threads, as an engine with `num_threads=2` has.
fn pool() -> Arc<rayon::ThreadPool> {
    Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap())
}

fn config(sparsity_threshold: f64, dense: DenseBackend) -> Config {
    Config { sparsity_threshold, dense, isa: Isa::best(), pool: pool() }
}

/// `x` (a source of `data` shape) and a constant weight wired into one `EinSum` of `axes`,
/// the weight first when `weight_first`, decluttered as the engine does before its passes.
fn einsum_model(axes: &str, data: &[usize], weight: Tensor, weight_first: bool) -> TypedModel {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(data)).unwrap();
    let w = model.add_const("w", weight).unwrap();
    let inputs = if weight_first { [w, x] } else { [x, w] };
    let op = EinSum::new(axes.parse().unwrap(), f32::datum_type());
    let y = model.wire_node("matmul", op, &inputs).unwrap();
    model.select_output_outlets(&y).unwrap();
    model.into_decluttered().unwrap()
}

/// The axes of the model's one `EinSum`, as tract's declutter left them.
fn einsum_axes(model: &TypedModel) -> String {
    let found: Vec<String> =
        model.nodes().iter().filter_map(|n| n.op_as::<EinSum>()).map(|es| es.axes.to_string()).collect();
    assert_eq!(found.len(), 1, "one EinSum after declutter");
    found[0].clone()
}

/// Runs `model` (optimized by tract) on `x`.
fn run(model: &TypedModel, x: &Tensor) -> Tensor {
    let plan = model.clone().into_optimized().unwrap().into_runnable().unwrap();
    let out = plan.run(tvec![x.clone().into_tvalue()]).unwrap();
    out[0].clone().into_tensor()
}

fn assert_close(ours: &Tensor, reference: &Tensor, what: &str) {
    assert_eq!(ours.shape(), reference.shape(), "{what}: shape");
    let a = ours.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
    let b = reference.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max difference {worst} (scale {scale})");
}

/// Runs the weight-matmul pass on a copy of `model`; returns the report and the outputs off/on.
fn pass_off_and_on(model: &TypedModel, x: &Tensor, cfg: &Config) -> (Vec<LayerReport>, Tensor, Tensor) {
    let off = run(model, x);
    let mut on_model = model.clone();
    let report = weight_matmul::run(&mut on_model, cfg).unwrap();
    let on = run(&on_model, x);
    (report, off, on)
}

/// `(axes, data shape, weight shape, weight first)` of layouts the kernels take.
const TAKEN: [(&str, &[usize], &[usize], bool); 10] = [
    ("mk,kn->mn", &[5, 24], &[24, 16], false),
    ("mk,nk->mn", &[5, 24], &[16, 24], false),
    ("kn,mk->mn", &[5, 24], &[24, 16], true),
    ("bmk,kn->bmn", &[2, 5, 24], &[24, 16], false),
    ("bmk,nk->bmn", &[2, 5, 24], &[16, 24], false),
    ("bkm,kn->bnm", &[2, 24, 5], &[24, 16], false),
    ("bmhd,hdn->bmn", &[2, 5, 4, 6], &[4, 6, 16], false),
    ("bmk,k->bm", &[2, 5, 24], &[24], false),
    ("amk,kn->mn", &[1, 5, 24], &[24, 16], false),
    ("bmk,kon->bmno", &[2, 5, 24], &[24, 1, 16], false),
];

#[test]
fn every_exporter_layout_runs_on_our_kernels_with_tracts_results() {
    for (axes, data, weight, weight_first) in TAKEN {
        for (zero_every, threshold, kernel) in [(0, 0.5, Kernel::Dense), (4, 0.5, Kernel::Sparse)] {
            let model = einsum_model(axes, data, tensor(weight, 3, zero_every), weight_first);
            let x = tensor(data, 11, 0);
            let (report, off, on) = pass_off_and_on(&model, &x, &config(threshold, DenseBackend::Sparsepipe));
            let what = format!("{axes} with {kernel:?} weights");
            assert_eq!(report.len(), 1, "{what}: one weight matmul found");
            assert_eq!(report[0].kernel, kernel, "{what}");
            assert_eq!(report[0].isa, RunsOn::Ours(Isa::best()), "{what}");
            assert_eq!(report[0].pattern, einsum_axes(&model), "{what}: the pattern is the EinSum's axes");
            assert_close(&on, &off, &what);
        }
    }
}

#[test]
fn layouts_the_kernels_do_not_take_stay_on_tract() {
    // contracted axes apart in the data; the output's axes in another order than memory's
    let left: [(&str, &[usize], &[usize]); 2] =
        [("kmj,kjn->mn", &[4, 5, 6], &[4, 6, 16]), ("bmk,kn->bnm", &[2, 5, 24], &[24, 16])];
    for (axes, data, weight) in left {
        let model = einsum_model(axes, data, tensor(weight, 5, 0), false);
        let x = tensor(data, 2, 0);
        let (report, off, on) = pass_off_and_on(&model, &x, &config(0.5, DenseBackend::Sparsepipe));
        assert!(report.is_empty(), "{axes}: not ours, got {report:?}");
        assert_close(&on, &off, axes);
    }
}

#[test]
fn dense_weights_stay_on_tract_when_asked_and_sparse_ones_never_do() {
    let x = tensor(&[5, 24], 1, 0);
    let dense = einsum_model("mk,kn->mn", &[5, 24], tensor(&[24, 16], 3, 0), false);
    let (report, off, on) = pass_off_and_on(&dense, &x, &config(0.5, DenseBackend::Tract));
    assert_eq!((report[0].kernel, report[0].isa), (Kernel::Dense, RunsOn::Tract));
    assert_close(&on, &off, "dense on tract");
    let sparse = einsum_model("mk,kn->mn", &[5, 24], tensor(&[24, 16], 3, 4), false);
    let (report, off, on) = pass_off_and_on(&sparse, &x, &config(0.5, DenseBackend::Tract));
    assert_eq!((report[0].kernel, report[0].isa), (Kernel::Sparse, RunsOn::Ours(Isa::best())));
    assert_close(&on, &off, "sparse with the tract backend");
    let (report, _, _) = pass_off_and_on(&sparse, &x, &config(1.5, DenseBackend::Sparsepipe));
    assert_eq!(report[0].kernel, Kernel::Dense, "a threshold above 1 disables the sparse kernel");
}

#[test]
fn bias_and_relu_after_the_matmul_are_folded_into_it() {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([2, 5, 24])).unwrap();
    let w = model.add_const("w", tensor(&[24, 16], 3, 4)).unwrap();
    let b = model.add_const("b", tensor(&[1, 1, 16], 7, 0)).unwrap();
    let zero = model.add_const("zero", tensor0(0f32).broadcast_into_rank(3).unwrap()).unwrap();
    let op = EinSum::new("bmk,kn->bmn".parse().unwrap(), f32::datum_type());
    let y = model.wire_node("matmul", op, &[x, w]).unwrap();
    let y = model.wire_node("bias", tract_core::ops::math::add(), &[y[0], b]).unwrap();
    let y = model.wire_node("relu", tract_core::ops::math::max(), &[y[0], zero]).unwrap();
    model.select_output_outlets(&y).unwrap();
    let model = model.into_decluttered().unwrap();
    let x = tensor(&[2, 5, 24], 9, 0);
    let (report, off, on) = pass_off_and_on(&model, &x, &config(0.5, DenseBackend::Sparsepipe));
    assert_eq!(report.len(), 1);
    assert!(!report[0].fused.is_empty(), "the bias (and ReLU) are folded: {:?}", report[0].fused);
    assert_close(&on, &off, "matmul + bias + relu");
}

/// `x -> linear(24 -> 24) -> linear(24 -> 16)`, with `x` added back after the first when
/// `residual`.
fn two_linears(residual: bool) -> TypedModel {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([2, 5, 24])).unwrap();
    let w1 = model.add_const("w1", tensor(&[24, 24], 3, 4)).unwrap();
    let w2 = model.add_const("w2", tensor(&[24, 16], 8, 0)).unwrap();
    let op = || EinSum::new("bmk,kn->bmn".parse().unwrap(), f32::datum_type());
    let mut y = model.wire_node("first", op(), &[x, w1]).unwrap();
    if residual {
        y = model.wire_node("add", tract_core::ops::math::add(), &[y[0], x]).unwrap();
    }
    let z = model.wire_node("second", op(), &[y[0], w2]).unwrap();
    model.select_output_outlets(&z).unwrap();
    model.into_decluttered().unwrap()
}

#[test]
fn residual_and_chain_passes_keep_the_results() {
    let x = tensor(&[2, 5, 24], 4, 0);
    let cfg = config(0.5, DenseBackend::Sparsepipe);
    for with_residual in [false, true] {
        let model = two_linears(with_residual);
        let off = run(&model, &x);
        let mut on = model.clone();
        let report = weight_matmul::run(&mut on, &cfg).unwrap();
        assert_eq!(report.len(), 2);
        let (folded, _) = residual::run(&mut on).unwrap();
        assert_eq!(folded.len(), usize::from(with_residual), "residual adds folded");
        let (chained, misses) = chain::run(&mut on).unwrap();
        assert!(chained.len() + misses.len() >= 1, "the chain pass looks at the second linear");
        assert_close(&run(&on, &x), &off, &format!("two linears, residual {with_residual}"));
    }
}
