//! `DenseBackend::Auto` (the default): each dense weight shape is timed on tract's matmul and on
//! our dense kernel at load, on the plan's threads, and runs on the faster; either way the
//! outputs are those of both backends.

mod common;

use std::path::PathBuf;

use common::{concrete_shape, run};
use sparsepipe_engine::{Data, DenseBackend, Engine, EngineOptions, Kernel, RunsOn};

#[test]
fn auto_runs_each_dense_weight_on_the_faster_backend_with_the_same_outputs() {
    assert_eq!(EngineOptions::default().dense_backend, DenseBackend::Auto);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/exporters");
    for (model, batch) in [("tf4-legacy-op14-bert-seqcls", Some(2)), ("tf5-legacy-op17-xlm-roberta-qa", None)] {
        let file = corpus.join(model).join("model.onnx");
        for threads in [1, 2] {
            let load = |dense_backend| {
                let options = EngineOptions {
                    batch_size: batch,
                    num_threads: Some(threads),
                    dense_backend,
                    ..Default::default()
                };
                Engine::load(&file, options).unwrap()
            };
            let (auto, tract, ours) =
                (load(DenseBackend::Auto), load(DenseBackend::Tract), load(DenseBackend::Sparsepipe));
            let dense: Vec<_> = auto.sparsity_report().iter().filter(|l| l.kernel == Kernel::Dense).collect();
            assert!(!dense.is_empty(), "{model}: no dense weight");
            for line in &dense {
                assert!(line.isa == RunsOn::Tract || line.isa == RunsOn::Ours(auto.isa()), "{model}: {line:?}");
            }
            // One choice per distinct shape: weights of one shape and pattern share a backend.
            for a in &dense {
                for b in dense.iter().filter(|b| b.pattern == a.pattern && b.weight_shape == a.weight_shape) {
                    assert_eq!(a.isa, b.isa, "{model}: {} and {} differ", a.node, b.node);
                }
            }
            let inputs: Vec<(Vec<usize>, Data)> = auto
                .inputs()
                .iter()
                .map(|info| {
                    let shape = concrete_shape(info, 2, 9);
                    let len = shape.iter().product();
                    let data = match info.dtype.map(|d| d.name()) {
                        Some("int64") if info.name.contains("type") => Data::I64(vec![0; len]),
                        Some("int64") if info.name.contains("mask") => Data::I64(vec![1; len]),
                        _ => Data::I64((0..len).map(|i| (i * 31 % 80 + 3) as i64).collect()),
                    };
                    (shape, data)
                })
                .collect();
            let got = run(&auto, &inputs);
            // A second load in this process makes the same choices: the same sums, bit for bit.
            let again = load(DenseBackend::Auto);
            let isas = |e: &Engine| e.sparsity_report().iter().map(|l| l.isa).collect::<Vec<_>>();
            assert_eq!(isas(&again), isas(&auto), "{model}");
            for (x, y) in run(&again, &inputs).iter().zip(&got) {
                if let (Data::F32(x), Data::F32(y)) = (&x.data, &y.data) {
                    assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()), "{model}: reloaded differs");
                }
            }
            for reference in [run(&tract, &inputs), run(&ours, &inputs)] {
                for (x, y) in got.iter().zip(&reference) {
                    assert_eq!(x.shape, y.shape);
                    if let (Data::F32(x), Data::F32(y)) = (&x.data, &y.data) {
                        for (p, q) in x.iter().zip(y) {
                            assert!((p - q).abs() <= 1e-4 * q.abs().max(1.0), "{model} {threads}T: {p} vs {q}");
                        }
                    }
                }
            }
        }
    }
}
