//! The binary as people run it: the local server on a real socket with a graceful stop, and the
//! command-line classifier.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_densenet-api");

/// One HTTP/1.1 exchange over a fresh connection; returns the status and the body.
fn http(addr: &str, request_head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{request_head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_answers_on_a_socket_and_stops_gracefully() {
    let logs = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--port", "0"])
        .env("MODEL_PATH", test_model_path())
        .env("LOG_DIR", logs.path())
        .env("RUST_LOG", "info")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the server");
    // The server logs the address it bound; port 0 lets the OS choose a free one. A reader thread
    // forwards its log lines so that waiting for them has a deadline.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    while addr.is_none() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(wait) else {
            break;
        };
        if line.contains("listening") {
            addr = line
                .split("address=")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap().to_owned());
        }
    }
    if addr.is_none() {
        child.kill().ok();
    }
    let addr = addr.expect("the server logged its address");

    let (status, body) = http(&addr, "GET /health HTTP/1.1", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"model_loaded\":true"), "{body}");
    let image = png(50, 50);
    let (status, body) = http(
        &addr,
        "POST /predict?top_k=2 HTTP/1.1\r\nContent-Type: image/png",
        &image,
    );
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["predictions"].as_array().unwrap().len(), 2);

    // SIGTERM: the server stops accepting, finishes, and exits 0.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

#[test]
fn predict_prints_a_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("cat.png");
    std::fs::write(&image, png(90, 60)).unwrap();
    let output = Command::new(BIN)
        .args(["predict", "-k", "3"])
        .arg(&image)
        .env("MODEL_PATH", test_model_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("cat.png"), "{stdout}");
    assert!(
        lines[1].contains("rank") && lines[1].contains("label"),
        "{stdout}"
    );
    assert!(lines[2].trim_start().starts_with("1 "), "{stdout}");
    assert!(lines[4].trim_start().starts_with("3 "), "{stdout}");
    assert!(lines[2].contains('%'));

    let output = Command::new(BIN)
        .args(["predict", "--json"])
        .arg(&image)
        .env("MODEL_PATH", test_model_path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["filename"], "cat.png");
    assert_eq!(value["predictions"].as_array().unwrap().len(), 5);
    assert_eq!(value["success"], true);
}

#[test]
fn predict_reports_bad_files_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    let bad = dir.path().join("bad.png");
    std::fs::write(&good, png(30, 30)).unwrap();
    std::fs::write(&bad, b"not an image").unwrap();
    let missing = dir.path().join("missing.png");
    let output = Command::new(BIN)
        .arg("predict")
        .args([&good, &bad, &missing])
        .env("MODEL_PATH", test_model_path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("good.png"), "{stdout}");
    assert!(
        stderr.contains("bad.png") && stderr.contains("not a recognised image"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.png"), "{stderr}");
    assert!(stderr.contains("2 of 3 images"), "{stderr}");
}

#[test]
fn start_up_errors_say_what_to_set() {
    let output = Command::new(BIN)
        .args(["predict", "x.png"])
        .env("STAGE", "staging")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("STAGE must be"),
        "{output:?}"
    );

    let output = Command::new(BIN)
        .args(["predict", "x.png"])
        .env("MODEL_PATH", "/nonexistent/model.onnx")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MODEL_PATH") && stderr.contains("fetch-model.sh"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "cat\ndog\n").unwrap();
    let output = Command::new(BIN)
        .args(["predict", "x.png"])
        .env("MODEL_PATH", test_model_path())
        .env("LABELS_PATH", &labels)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1000 outputs but there are 2 labels"),
        "{stderr}"
    );
}
