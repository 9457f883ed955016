//! The prepared model (`densenet-api prepare-model`, loaded through `PREPARED_MODEL_PATH`): the
//! same answers and the same description as the ONNX file it came from, written whole or not at
//! all, and refused with a clear error when it is not one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use densenet_api::inference::{self, LoadOptions, SharedEngine};

const BIN: &str = env!("CARGO_BIN_EXE_densenet-api");

/// The test model prepared once per test binary, in a directory kept for the binary's life.
fn prepared_path() -> &'static Path {
    static PREPARED: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = PREPARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.nnef.tar");
        let prepared = inference::prepare(&common::test_model_path(), &path).unwrap();
        assert_eq!(prepared.bytes, std::fs::metadata(&path).unwrap().len());
        assert!(prepared.bytes > 30_000_000, "the weights are in the tar");
        (dir, path)
    });
    path
}

fn load_prepared(path: &Path) -> anyhow::Result<SharedEngine> {
    let options = LoadOptions {
        prepared_model: Some(path.to_owned()),
        ..LoadOptions::new("DenseNet121", 1)
    };
    // MODEL_PATH is not read when a prepared model is given.
    inference::load(Path::new("/nonexistent/model.onnx"), &options)
}

fn error_of(result: anyhow::Result<SharedEngine>) -> String {
    match result {
        Ok(_) => panic!("loaded what should have been refused"),
        Err(error) => format!("{error:#}"),
    }
}

fn tensors() -> Vec<Vec<f32>> {
    // Three deterministic inputs of different character: flat, ramp, alternating.
    let n = 3 * 224 * 224;
    vec![
        vec![0.25; n],
        (0..n).map(|i| (i % 224) as f32 / 112.0 - 1.0).collect(),
        (0..n)
            .map(|i| if i % 2 == 0 { 1.5 } else { -1.5 })
            .collect(),
    ]
}

#[test]
fn the_prepared_model_gives_the_same_scores_as_the_onnx_file() {
    let onnx = common::engine();
    let prepared = load_prepared(prepared_path()).unwrap();
    for tensor in tensors() {
        let a = onnx.run(tensor.clone()).unwrap();
        let b = prepared.run(tensor).unwrap();
        assert_eq!(a.len(), 1000);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "worst absolute difference {worst}");
    }
}

#[test]
fn the_prepared_model_describes_the_onnx_file_it_came_from() {
    let mut onnx = common::engine().info().clone();
    let mut prepared = load_prepared(prepared_path()).unwrap().info().clone();
    assert!(prepared.load_time_ms > 0.0);
    onnx.load_time_ms = 0.0;
    prepared.load_time_ms = 0.0;
    assert_eq!(prepared, onnx);
    let bytes = std::fs::read(common::test_model_path()).unwrap();
    assert_eq!(prepared.model_file_size, bytes.len() as u64);
    assert_eq!(prepared.opset_version, 17);
    assert_eq!(prepared.input_shape, vec![1, 3, 224, 224]);
}

#[test]
fn preparing_a_file_that_is_not_onnx_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"\x08\x07 definitely not protobuf \xff\xff\xff").unwrap();
    let out = dir.path().join("out.nnef.tar");
    let error = format!("{:#}", inference::prepare(&bad, &out).unwrap_err());
    assert!(error.contains("bad.onnx"), "{error}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("bad.onnx")]);
}

#[test]
fn preparing_into_a_missing_directory_fails_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("missing").join("out.nnef.tar");
    let error = format!(
        "{:#}",
        inference::prepare(&common::test_model_path(), &out).unwrap_err()
    );
    assert!(error.contains("missing"), "{error}");
    assert!(!dir.path().join("missing").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_truncated_prepared_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.nnef.tar");
    let bytes = std::fs::read(prepared_path()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let error = error_of(load_prepared(&cut));
    assert!(error.contains("cut.nnef.tar"), "{error}");
}

#[test]
fn a_prepared_model_from_another_tract_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.nnef.tar");
    let mut bytes = std::fs::read(prepared_path()).unwrap();
    // The serialiser records its version in graph.nnef; tar keeps no checksum of contents, so a
    // same-length edit stands for a file written by another tract release.
    let needle = format!(
        "(\"tract_nnef_ser_version\", \"{}\")",
        env!("TRACT_VERSION")
    );
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the version property in graph.nnef");
    let version_at = at + needle.len() - 3; // the last digit, before `")`
    bytes[version_at] = if bytes[version_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    std::fs::write(&other, &bytes).unwrap();
    let error = error_of(load_prepared(&other));
    assert!(error.contains("prepare it again"), "{error}");
    assert!(error.contains(env!("TRACT_VERSION")), "{error}");
}

#[test]
fn an_nnef_model_not_written_by_prepare_model_is_refused() {
    // A valid NNEF tar of the same network without the recorded ONNX facts.
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.nnef.tar");
    let bytes = std::fs::read(prepared_path()).unwrap();
    let needle = b"(\"densenet_api.input_name\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the input-name property in graph.nnef");
    let mut edited = bytes.clone();
    // Rename the key in place (same length), as if another tool had written the file.
    edited[at + 2..at + 14].copy_from_slice(b"other_tool.x");
    std::fs::write(&plain, &edited).unwrap();
    let error = error_of(load_prepared(&plain));
    assert!(
        error.contains("not written by `densenet-api prepare-model`"),
        "{error}"
    );
    assert!(error.contains("densenet_api.input_name"), "{error}");
}

#[test]
fn the_binary_prepares_then_predicts_the_same_as_from_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("picture.png");
    std::fs::write(&image, common::png(200, 150)).unwrap();
    let out = dir.path().join("model.nnef.tar");

    let prepare = Command::new(BIN)
        .args(["prepare-model", "--out"])
        .arg(&out)
        .env("MODEL_PATH", common::test_model_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&prepare.stderr);
    assert!(prepare.status.success(), "{stderr}");
    assert!(stderr.contains("model prepared"), "{stderr}");
    assert!(out.is_file());

    let predict = |prepared: Option<&Path>| {
        let mut command = common::predict_command(&image, &dir.path().join("logs"));
        if let Some(path) = prepared {
            command.env("PREPARED_MODEL_PATH", path);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        let json: serde_json::Value =
            serde_json::from_slice(output.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        (json["predictions"].clone(), stderr)
    };
    let (from_onnx, _) = predict(None);
    let (from_prepared, stderr) = predict(Some(&out));
    assert_eq!(from_onnx.as_array().unwrap().len(), 5);
    assert_eq!(from_prepared, from_onnx);
    assert!(stderr.contains("model ready"), "{stderr}");
    assert!(stderr.contains("model.nnef.tar"), "{stderr}");
}

#[test]
fn the_binary_stops_with_a_clear_error_on_a_missing_prepared_model() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("picture.png");
    std::fs::write(&image, common::png(32, 32)).unwrap();
    let output = common::predict_command(&image, &dir.path().join("logs"))
        .env("PREPARED_MODEL_PATH", dir.path().join("absent.nnef.tar"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("absent.nnef.tar"), "{stderr}");
    assert!(stderr.contains("PREPARED_MODEL_PATH"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
