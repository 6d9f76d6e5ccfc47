//! The real exporter graphs in `../shared/models`: every constant-weight matmul is found, and our
//! kernels give what tract alone gives. Skips (with a message) when `../shared` is absent.

mod common;

use std::path::PathBuf;

use common::{concrete_shape, run};
use sparsepipe_engine::{Array, Data, DenseBackend, Engine, EngineOptions, Isa, Kernel, RunsOn};

fn shared_models() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models");
    if dir.is_dir() {
        Some(dir)
    } else {
        assert!(std::env::var_os("CI").is_none(), "{} is absent but CI is set: CI must run these", dir.display());
        eprintln!("SKIPPED: {} is absent (a user's checkout); CI always has it", dir.display());
        None
    }
}

/// Owned inputs for one call: ids in range for int inputs, a smooth pattern for floats.
fn inputs_for(engine: &Engine, batch: usize, seq: usize) -> Vec<(Vec<usize>, Data)> {
    engine
        .inputs()
        .iter()
        .map(|info| {
            let shape = concrete_shape(info, batch, seq);
            let len: usize = shape.iter().product();
            let data = match info.dtype.unwrap().name() {
                "int64" if info.name.contains("mask") => Data::I64(vec![1; len]),
                "int64" if info.name.contains("type") => Data::I64(vec![0; len]),
                "int64" => Data::I64((0..len).map(|i| (i * 37 % 900 + 5) as i64).collect()),
                _ => Data::F32((0..len).map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.3).collect()),
            };
            (shape, data)
        })
        .collect()
}

fn max_rel_err(a: &[Array], b: &[Array]) -> f32 {
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape, y.shape);
        if let (Data::F32(x), Data::F32(y)) = (&x.data, &y.data) {
            let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (p, q) in x.iter().zip(y) {
                worst = worst.max((p - q).abs() / scale);
            }
        }
    }
    worst
}

#[test]
fn shared_models_match_tract_alone() {
    let Some(dir) = shared_models() else { return };
    // (model, weight matmuls and convolutions expected, batch, seq)
    let cases = [
        ("sentiment-minilm-sparse80", 38, 2, 13),
        ("pii-ner-minilm", 37, 1, 20),
        ("efficientnet-lite0-imagenet", 34, 1, 0),
        ("yolov3-tiny-coco", 13, 1, 0),
        ("yolov8n-random", 102, 1, 0),
    ];
    for (name, expected, batch, seq) in cases {
        let path = dir.join(name).join("model.onnx");
        let ours = Engine::load(&path, EngineOptions { num_threads: Some(2), ..Default::default() }).unwrap();
        let all_ours = Engine::load(
            &path,
            EngineOptions { num_threads: Some(2), dense_backend: DenseBackend::Sparsepipe, ..Default::default() },
        )
        .unwrap();
        let tract =
            Engine::load(&path, EngineOptions { num_threads: Some(1), sparsity_threshold: 2.0, ..Default::default() })
                .unwrap();
        let report = all_ours.sparsity_report();
        assert_eq!(report.len(), expected, "{name}: weight matmuls found: {report:#?}");
        assert!(report.iter().all(|l| l.isa != RunsOn::Tract), "{name}");
        let inputs = inputs_for(&ours, batch, seq);
        let want = run(&tract, &inputs);
        for engine in [&ours, &all_ours] {
            let err = max_rel_err(&run(engine, &inputs), &want);
            assert!(err < 1e-4, "{name}: relative error {err}");
        }
        if name.starts_with("sentiment") {
            let sparse = report.iter().filter(|l| l.kernel == Kernel::Sparse).count();
            assert!(sparse >= 36, "{name}: only {sparse} sparse kernels: {report:#?}");
            assert!(report.iter().any(|l| !l.fused.is_empty()), "{name}: no bias fused");
        }
        eprintln!("{name}: ok ({} weight matmuls, {} isa)", report.len(), Isa::best());
    }
}
