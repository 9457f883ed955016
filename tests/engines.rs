//! The two engines (tract and ONNX Runtime) give the same answers for the same model, and a
//! misconfigured ONNX Runtime is a clear start-up error. Built with `--features onnxruntime`;
//! the library comes from `ORT_DYLIB_PATH` (scripts/test.sh points it at the onnxruntime wheel's).
#![cfg(feature = "onnxruntime")]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use densenet_api::AppState;
use densenet_api::classify::Classifier;
use densenet_api::inference::{self, EngineKind, LoadOptions, SharedEngine};
use densenet_api::labels::Labels;
use densenet_api::prediction_log::PredictionLog;
use serde::Deserialize;

fn onnxruntime_library() -> PathBuf {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .expect(
            "ORT_DYLIB_PATH is not set: run scripts/test.sh, or point it at the libonnxruntime.so \
         of the onnxruntime wheel (pip install onnxruntime; onnxruntime/capi/)",
        );
    assert!(
        path.is_file(),
        "ORT_DYLIB_PATH={} is not a file",
        path.display()
    );
    path
}

fn onnxruntime_options(threads: usize) -> LoadOptions {
    LoadOptions {
        engine: EngineKind::OnnxRuntime,
        onnxruntime_library: onnxruntime_library(),
        ..LoadOptions::new("DenseNet121", threads)
    }
}

/// The test model in ONNX Runtime, loaded once per test binary.
fn onnxruntime_engine() -> SharedEngine {
    static ENGINE: OnceLock<SharedEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            inference::load(&common::test_model_path(), &onnxruntime_options(1))
                .expect("loading the test model into ONNX Runtime")
        })
        .clone()
}

#[derive(Deserialize)]
struct Case {
    name: String,
    tensor: String,
}

/// The reference tensors that `scripts/reference.py` wrote to `REFERENCE_DIR`.
fn reference_tensors() -> Vec<(String, Vec<f32>)> {
    let dir = std::env::var_os("REFERENCE_DIR")
        .map(PathBuf::from)
        .expect("REFERENCE_DIR is not set: run scripts/test.sh");
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 8, "expected a handful of reference images");
    cases
        .into_iter()
        .map(|case| {
            let bytes = std::fs::read(dir.join(&case.tensor)).unwrap();
            let tensor = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (case.name, tensor)
        })
        .collect()
}

/// The largest difference between two score vectors, relative to the largest score.
fn worst_relative_difference(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max)
}

fn top5(scores: &[f32]) -> Vec<usize> {
    inference::top_k(&inference::softmax(scores), 5, &Labels::imagenet())
        .iter()
        .map(|p| p.class_id)
        .collect()
}

#[test]
fn both_engines_give_the_same_scores_on_the_reference_tensors() {
    let tract = common::engine();
    let onnxruntime = onnxruntime_engine();
    for (name, tensor) in reference_tensors() {
        let a = tract.run(tensor.clone()).unwrap();
        let b = onnxruntime.run(tensor).unwrap();
        assert_eq!(a.len(), 1000, "{name}");
        let worst = worst_relative_difference(&a, &b);
        assert!(worst <= 1e-4, "{name}: worst relative difference {worst}");
        assert_eq!(top5(&a), top5(&b), "{name}: top-5 differ");
    }
}

#[test]
fn both_engines_describe_the_model_alike() {
    let tract = common::engine().info().clone();
    let onnxruntime = onnxruntime_engine().info().clone();
    assert!(tract.runtime.starts_with("tract 0."), "{}", tract.runtime);
    assert!(
        onnxruntime.runtime.starts_with("onnxruntime 1."),
        "{}",
        onnxruntime.runtime
    );
    assert!(onnxruntime.load_time_ms > 0.0);
    let same = |mut info: inference::ModelInfo| {
        info.runtime.clear();
        info.load_time_ms = 0.0;
        info
    };
    assert_eq!(same(tract), same(onnxruntime.clone()));
    assert_eq!(onnxruntime.input_shape, vec![1, 3, 224, 224]);
    assert_eq!(onnxruntime.num_classes, 1000);
}

#[test]
fn onnxruntime_rejects_a_tensor_of_the_wrong_size_and_keeps_working() {
    let engine = onnxruntime_engine();
    let error = engine.run(vec![0.0; 10]).unwrap_err().to_string();
    assert!(
        error.contains("10 values") && error.contains("150528"),
        "{error}"
    );
    let scores = engine.run(vec![0.0; 3 * 224 * 224]).unwrap();
    assert_eq!(scores.len(), 1000);
    assert!(scores.iter().all(|s| s.is_finite()));
}

#[test]
fn concurrent_onnxruntime_runs_each_get_their_own_answer() {
    let engine = onnxruntime_engine();
    let tensors: Vec<Vec<f32>> = reference_tensors().into_iter().map(|(_, t)| t).collect();
    let alone: Vec<Vec<f32>> = tensors
        .iter()
        .map(|t| engine.run(t.clone()).unwrap())
        .collect();
    let together: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = tensors
            .iter()
            .map(|t| {
                let engine = engine.clone();
                scope.spawn(move || engine.run(t.clone()).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in alone.iter().zip(&together) {
        assert!(worst_relative_difference(a, b) <= 1e-6);
    }
    // Different inputs give different answers: the runs did not share an output buffer.
    assert_ne!(together[0], together[1]);
}

#[test]
fn onnxruntime_with_two_threads_agrees_with_one() {
    let two = inference::load(&common::test_model_path(), &onnxruntime_options(2)).unwrap();
    let one = onnxruntime_engine();
    let (_, tensor) = reference_tensors().remove(0);
    let worst =
        worst_relative_difference(&two.run(tensor.clone()).unwrap(), &one.run(tensor).unwrap());
    assert!(worst <= 1e-5, "worst relative difference {worst}");
}

#[test]
fn a_file_that_is_not_onnx_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, b"\x08\x07not a model at all\xff\xff").unwrap();
    let error = match inference::load(&path, &onnxruntime_options(1)) {
        Ok(_) => panic!("a garbage file loaded as a model"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("model.onnx"), "{error}");
}

#[tokio::test]
async fn the_router_answers_the_same_with_either_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());
    let with = |engine: SharedEngine| {
        let classifier =
            Classifier::new(engine, Labels::imagenet(), config.max_image_pixels).unwrap();
        let log = PredictionLog::local(config.stage, config.log_dir.clone());
        AppState::new(config.clone(), Some(classifier), log)
    };
    let tract = with(common::engine());
    let onnxruntime = with(onnxruntime_engine());
    let image = common::png(320, 240);
    let predict = || common::post("/predict?top_k=5", "image/png", image.clone());

    let (status_a, _, a) = common::json(common::send(&tract, predict()).await).await;
    let (status_b, _, b) = common::json(common::send(&onnxruntime, predict()).await).await;
    assert_eq!((status_a, status_b), (200, 200), "{a} {b}");
    let classes = |v: &serde_json::Value| -> Vec<u64> {
        v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["class_id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(classes(&a).len(), 5);
    assert_eq!(classes(&a), classes(&b));
    for (p, q) in a["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["predictions"].as_array().unwrap())
    {
        let (p, q) = (
            p["probability"].as_f64().unwrap(),
            q["probability"].as_f64().unwrap(),
        );
        assert!((p - q).abs() <= 1e-5, "{p} vs {q}");
    }

    let (status, _, info) =
        common::json(common::send(&onnxruntime, common::get("/model-info")).await).await;
    assert_eq!(status, 200);
    assert!(
        info["runtime"]
            .as_str()
            .unwrap()
            .starts_with("onnxruntime 1."),
        "{info}"
    );
}

/// Runs the binary's `predict` command with extra environment variables.
fn predict_with(env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("picture.png");
    std::fs::write(&image, common::png(64, 48)).unwrap();
    let mut command = common::predict_command(&image, &dir.path().join("logs"));
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("running the binary")
}

#[test]
fn the_binary_runs_on_onnxruntime_when_engine_says_so() {
    let library = onnxruntime_library();
    let output = predict_with(&[
        ("ENGINE", "onnxruntime"),
        ("ORT_DYLIB_PATH", library.to_str().unwrap()),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("engine=onnxruntime"), "{stderr}");
    assert!(stderr.contains("runtime=onnxruntime 1."), "{stderr}");
}

#[test]
fn a_missing_onnxruntime_library_stops_start_up_with_a_clear_error() {
    let output = predict_with(&[
        ("ENGINE", "onnxruntime"),
        ("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_library_that_is_not_onnxruntime_stops_start_up_with_a_clear_error() {
    // A real shared library without ONNX Runtime's entry point.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file())
    .expect("a libc to stand in for a wrong library");
    let output = predict_with(&[("ENGINE", "onnxruntime"), ("ORT_DYLIB_PATH", libc)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("OrtGetApiBase"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_engine_is_a_configuration_error() {
    let output = predict_with(&[("ENGINE", "tensorflow")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("ENGINE must be `tract` or `onnxruntime`"),
        "{stderr}"
    );
}
