//! Agreement with the reference pipeline of the original service (Pillow + numpy + onnxruntime),
//! whose outputs `scripts/reference.py` writes to `REFERENCE_DIR` for images it makes itself.

mod common;

use std::path::PathBuf;

use densenet_api::preprocess::{self, STD};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    image: String,
    format: String,
    tensor: String,
    scores: String,
    top5: Vec<usize>,
}

fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("REFERENCE_DIR").map(PathBuf::from).expect(
        "REFERENCE_DIR is not set: run scripts/test.sh, or `python scripts/reference.py --model \
         $TEST_MODEL_PATH --out DIR` and export REFERENCE_DIR=DIR",
    );
    assert!(
        dir.join("cases.json").is_file(),
        "{} has no cases.json",
        dir.display()
    );
    dir
}

fn cases() -> (PathBuf, Vec<Case>) {
    let dir = reference_dir();
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 8, "expected a handful of reference images");
    (dir, cases)
}

fn read_f32(path: PathBuf) -> Vec<f32> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn raw_scores_match_onnxruntime_on_the_same_tensor() {
    let (dir, cases) = cases();
    let engine = common::engine();
    for case in &cases {
        let tensor = read_f32(dir.join(&case.tensor));
        let expected = read_f32(dir.join(&case.scores));
        let got = engine.run(tensor).unwrap();
        assert_eq!(got.len(), expected.len());
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{}: worst relative difference {worst}",
            case.name
        );
    }
}

#[test]
fn png_preprocessing_matches_pillow_within_two_grey_levels() {
    let (dir, cases) = cases();
    let pngs: Vec<&Case> = cases.iter().filter(|c| c.format == "png").collect();
    assert!(pngs.len() >= 5);
    for case in pngs {
        let bytes = std::fs::read(dir.join(&case.image)).unwrap();
        let rgb = preprocess::decode(&bytes, 100_000_000).unwrap();
        let got = preprocess::to_tensor(&rgb, 224, 224).unwrap();
        let expected = read_f32(dir.join(&case.tensor));
        assert_eq!(got.len(), expected.len());
        let plane = 224 * 224;
        let within = got
            .iter()
            .zip(&expected)
            .enumerate()
            .filter(|(i, (a, b))| {
                // One grey level in channel c is 1 / (255 * std[c]) after normalisation.
                let level = 1.0 / (255.0 * STD[i / plane]);
                (*a - *b).abs() <= 2.0 * level + 1e-6
            })
            .count();
        let share = within as f64 / got.len() as f64;
        assert!(
            share >= 0.99,
            "{}: only {:.3}% within 2 grey levels",
            case.name,
            share * 100.0
        );
    }
}

#[test]
fn jpeg_top5_matches_the_reference() {
    let (dir, cases) = cases();
    let classifier = common::classifier(&densenet_api::config::Config::default());
    let jpegs: Vec<&Case> = cases.iter().filter(|c| c.format == "jpeg").collect();
    assert!(jpegs.len() >= 3);
    for case in jpegs {
        let bytes = std::fs::read(dir.join(&case.image)).unwrap();
        let got: Vec<usize> = classifier
            .classify(&bytes, 5)
            .unwrap()
            .predictions
            .iter()
            .map(|p| p.class_id)
            .collect();
        let mut got_sorted = got.clone();
        let mut expected_sorted = case.top5.clone();
        got_sorted.sort_unstable();
        expected_sorted.sort_unstable();
        assert_eq!(
            got_sorted, expected_sorted,
            "{}: top-5 {got:?} vs reference {:?}",
            case.name, case.top5
        );
        assert_eq!(got[0], case.top5[0], "{}: top-1", case.name);
    }
}
