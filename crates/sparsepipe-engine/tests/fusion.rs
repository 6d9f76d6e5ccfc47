//! The attention fusion pass on and off over the exporter corpus (`tests/data/exporters`: real
//! transformers and torch exports of 11 text architectures): the fused plan gives the unfused
//! plan's outputs, and the architectures whose attention is the plain pattern are fused.

mod common;

use std::path::PathBuf;

use common::{concrete_shape, run};
use sparsepipe_engine::{Data, DenseBackend, Engine, EngineOptions};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/exporters")
}

/// Inputs for batch 2, length 7: ids in range, the second row's mask padded after 4 tokens.
fn inputs_for(engine: &Engine) -> Vec<(Vec<usize>, Data)> {
    engine
        .inputs()
        .iter()
        .map(|info| {
            let shape = concrete_shape(info, 2, 7);
            let len: usize = shape.iter().product();
            let last = *shape.last().unwrap_or(&1);
            let data = match info.dtype.map(|d| d.name()) {
                Some("int64") if info.name.contains("mask") => {
                    Data::I64((0..len).map(|i| i64::from(i < last || i % last < 4)).collect())
                }
                Some("int64") if info.name.contains("type") => Data::I64((0..len).map(|i| (i % 2) as i64).collect()),
                Some("int64") => Data::I64((0..len).map(|i| (i * 37 % 90 + 5) as i64).collect()),
                _ => Data::F32((0..len).map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.3).collect()),
            };
            (shape, data)
        })
        .collect()
}

/// Eager-attention exports of transformers 4 and 5 across architectures.
const EAGER: [&str; 6] = [
    "tf4-legacy-op14-bert-seqcls",
    "tf4-legacy-op14-distilbert-seqcls",
    "tf4-legacy-op14-roberta-seqcls",
    "tf5-legacy-op17-bert-seqcls",
    "tf5-legacy-op17-electra-tokcls",
    "tf5-legacy-op17-xlm-roberta-qa",
];

#[test]
fn fused_attention_equals_unfused_on_exporter_graphs() {
    let (mut fused_models, mut qkv_models, mut residual_models, mut chain_models) = (vec![], vec![], vec![], vec![]);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.join("model.onnx").is_file()) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let file = dir.join("model.onnx");
        let on = Engine::load(&file, EngineOptions { num_threads: Some(2), ..Default::default() }).unwrap();
        if on.inputs().iter().any(|i| i.dtype.map(|d| d.name()) == Some("float32")) {
            continue; // vision models: no attention of this form
        }
        let off =
            Engine::load(&file, EngineOptions { num_threads: Some(1), fuse: false, ..Default::default() }).unwrap();
        assert!(off.fused_ops().is_empty());
        let inputs = inputs_for(&on);
        let b = run(&off, &inputs);
        // Default kernels, then every weight on our dense kernel, then on our sparse kernel (the
        // q/k/v projections merge only when all three run on our kernels).
        let ours_dense =
            EngineOptions { num_threads: Some(2), dense_backend: DenseBackend::Sparsepipe, ..Default::default() };
        let ours_sparse = EngineOptions { num_threads: Some(2), sparsity_threshold: 0.0, ..Default::default() };
        let variants = [on, Engine::load(&file, ours_dense).unwrap(), Engine::load(&file, ours_sparse).unwrap()];
        for (v, engine) in variants.iter().enumerate() {
            let a = run(engine, &inputs);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.shape, y.shape, "{name}");
                if let (Data::F32(x), Data::F32(y)) = (&x.data, &y.data) {
                    for (i, (p, q)) in x.iter().zip(y).enumerate() {
                        assert!(
                            (p - q).abs() <= 1e-4 * q.abs().max(1.0),
                            "{name} #{v}: fused {p} vs unfused {q} at {i}"
                        );
                    }
                }
            }
        }
        if variants[0].fused_ops().iter().any(|f| f.kind == "attention") {
            fused_models.push(name.clone());
        }
        if variants[1..].iter().all(|e| e.fused_ops().iter().any(|f| f.kind == "residual_add")) {
            residual_models.push(name.clone());
        }
        if variants[1..].iter().all(|e| e.fused_ops().iter().any(|f| f.kind == "linear_chain")) {
            chain_models.push(name.clone());
        }
        if variants[1..].iter().all(|e| e.fused_ops().iter().any(|f| f.kind == "qkv_projection")) {
            qkv_models.push(name);
        }
    }
    eprintln!("fused: {fused_models:?}");
    eprintln!("q/k/v projections merged: {qkv_models:?}");
    // transformers 4 (eager attention), transformers 5 (SDPA with its NaN guard), torch dynamo.
    let dynamo = ["tf5-dynamo-op20-bert-seqcls", "tf5-dynamo-op20-distilbert-qa"];
    for model in EAGER.iter().chain(&dynamo) {
        assert!(fused_models.iter().any(|m| m == model), "{model} was not fused: {fused_models:?}");
    }
    // Eager-attention exports (q and k scaled on the way or not) compute q/k/v as one linear, and
    // residual adds after our linears are done as they write, and each feed-forward block's two
    // linears run as one op.
    for model in EAGER {
        assert!(qkv_models.iter().any(|m| m == model), "{model}: q/k/v not merged: {qkv_models:?}");
        assert!(residual_models.iter().any(|m| m == model), "{model}: no residual folded: {residual_models:?}");
        assert!(chain_models.iter().any(|m| m == model), "{model}: no feed-forward chained: {chain_models:?}");
    }
}

#[test]
fn every_unfused_candidate_says_why() {
    let file = corpus().join("tf4-legacy-op14-bert-seqcls").join("model.onnx");
    let load = |options: EngineOptions| Engine::load(&file, EngineOptions { num_threads: Some(1), ..options }).unwrap();
    assert!(load(EngineOptions { fuse: false, ..Default::default() }).fusion_misses().is_empty());
    // Dense weights on tract's matmul: the attention fuses but its projections, the residual
    // adds and the feed-forward blocks cannot, and each says which option would let them.
    let on_tract = load(EngineOptions { dense_backend: DenseBackend::Tract, ..Default::default() });
    let misses = on_tract.fusion_misses();
    for kind in ["qkv_projection", "residual_add", "linear_chain"] {
        let of_kind: Vec<_> = misses.iter().filter(|m| m.kind == kind).collect();
        assert!(!of_kind.is_empty(), "no {kind} miss: {misses:#?}");
        for m in of_kind {
            assert!(m.reason.contains("dense_backend='sparsepipe'"), "{m:?}");
        }
    }
    // Every attention and layer norm fused, so none is a miss.
    assert!(misses.iter().all(|m| m.kind != "attention" && m.kind != "layer_norm"), "{misses:#?}");
    // On our kernels those fuse too; what is left (the classifier head: a tanh between the
    // pooler and the classifier) says why.
    let ours = load(EngineOptions { dense_backend: DenseBackend::Sparsepipe, ..Default::default() });
    for m in ours.fusion_misses() {
        assert!(m.kind == "linear_chain" && m.reason.contains("epilogue"), "{m:?}");
        assert!(!m.reason.contains("dense_backend"), "{m:?}");
    }
    // Across the corpus, every miss names a node and a reason.
    for dir in std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().path()) {
        if dir.join("model.onnx").is_file() {
            let engine =
                Engine::load(dir.join("model.onnx"), EngineOptions { num_threads: Some(1), ..Default::default() })
                    .unwrap();
            for m in engine.fusion_misses() {
                assert!(!m.node.is_empty() && m.reason.len() > 10, "{}: {m:?}", dir.display());
            }
        }
    }
}
