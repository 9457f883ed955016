//! The prediction log through the real router, against real S3 servers and a local directory:
//! SeaweedFS at `S3_ENDPOINT_URL` (strict conditional writes: every concurrency property is
//! checked there), moto at `MOTO_ENDPOINT_URL`, and the test model at `TEST_MODEL_PATH`.
//! `scripts/test.sh` starts the servers and sets the variables; each test makes its own bucket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use densenet_api::AppState;
use densenet_api::classify::Classifier;
use densenet_api::config::{Config, Stage};
use densenet_api::inference::{self, LoadOptions, Prediction};
use densenet_api::labels::Labels;
use densenet_api::prediction_log::{
    LocalStore, LogEntry, LogLine, LogStore, PredictionLog, S3Store, WriteMode, s3,
};
use futures_util::{StreamExt, stream};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing::instrument::WithSubscriber;

const HEADER_FORMAT: &str =
    "# Formato: timestamp|filename|top_prediction|confidence|processing_time|all_predictions";

// ----- servers, model and fixtures -----

fn required_env(name: &str, how: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test.sh, or {how} and export {name}")
    })
}

fn seaweed_url() -> String {
    required_env(
        "S3_ENDPOINT_URL",
        "start SeaweedFS (`.tools/venv/bin/weed mini -dir=/tmp/sw -ip=127.0.0.1 \
         -ip.bind=127.0.0.1 -admin.ui=false -webdav=false`, S3 on http://127.0.0.1:8333)",
    )
}

fn moto_url() -> String {
    required_env(
        "MOTO_ENDPOINT_URL",
        "start moto (`.tools/venv/bin/moto_server -H 127.0.0.1 -p 5055`)",
    )
}

fn classifier() -> Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER
        .get_or_init(|| {
            let path = required_env(
                "TEST_MODEL_PATH",
                "make a model with `python3 scripts/make-test-model.py --out /tmp/m.onnx`",
            );
            let options = LoadOptions::new("DenseNet121", 1);
            let engine = inference::load(path.as_ref(), &options).expect("loading the test model");
            Classifier::new(engine, Labels::imagenet(), 40_000_000).expect("labels fit the model")
        })
        .clone()
}

/// A small PNG, base64-encoded for the JSON envelope.
fn png_base64() -> &'static str {
    static PNG: OnceLock<String> = OnceLock::new();
    PNG.get_or_init(|| {
        let image = image::RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x + y) * 3) as u8])
        });
        let mut bytes = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut bytes, image::ImageFormat::Png)
            .expect("encoding the test PNG");
        base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
    })
}

fn state(stage: Stage, log: PredictionLog) -> AppState {
    // The service's warnings, shown with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let config = Config {
        stage,
        ..Config::default()
    };
    AppState::new(config, Some(classifier()), log)
}

fn s3_log(
    stage: Stage,
    client: aws_sdk_s3::Client,
    bucket: &str,
    mode: WriteMode,
) -> PredictionLog {
    let store = Arc::new(S3Store::new(client, bucket, stage));
    // Generous: these tests count lines, and the two cores are busy with inference.
    PredictionLog::new(stage, store, Duration::from_secs(5), mode)
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let response = densenet_api::app(state.clone())
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

async fn send_json(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let (status, body) = send(state, request).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, value)
}

fn predict_request(filename: &str) -> Request<Body> {
    let body = json!({"image": png_base64(), "filename": filename, "top_k": 3});
    Request::post("/predict")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

/// Classifies the test image as `filename`; returns the response's inference time in ms.
async fn predict(state: &AppState, filename: &str) -> f64 {
    let (status, body) = send_json(state, predict_request(filename)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["inference_time_ms"]
        .as_f64()
        .expect("inference_time_ms")
}

async fn download(state: &AppState) -> String {
    let response = densenet_api::app(state.clone())
        .oneshot(get("/logs/predictions/download"))
        .await
        .expect("the router is infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let stage = state.log.stage();
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=predicciones_{stage}.txt").as_str()
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8(body.to_vec()).expect("the log is UTF-8")
}

async fn stats(state: &AppState) -> Value {
    let (status, body) = send_json(state, get("/logs/predictions/stats")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A synthetic entry for seeding logs quickly, without inference.
fn entry(at: DateTime<Utc>, filename: &str, label: &str, confidence: f64, time: f64) -> LogEntry {
    LogEntry {
        timestamp: at,
        filename: Some(filename.to_owned()),
        predictions: vec![
            Prediction {
                rank: 1,
                class_id: 1,
                label: label.to_owned(),
                probability: confidence,
                confidence: format!("{:.2}%", confidence * 100.0),
            },
            Prediction {
                rank: 2,
                class_id: 2,
                label: "other".to_owned(),
                probability: (1.0 - confidence) / 2.0,
                confidence: String::new(),
            },
        ],
        processing_time_s: time,
    }
}

/// Stores `lines`, one write each, `concurrency` at once (so in no particular order).
async fn seed(store: &dyn LogStore, lines: &[LogLine], concurrency: usize) {
    stream::iter(lines.chunks(1))
        .map(|one| store.append(one))
        .buffer_unordered(concurrency)
        .for_each(|r| async move { r.expect("seeding the log") })
        .await;
}

// ----- reading the log back -----

/// One prediction line of a downloaded log.
#[derive(Debug, Clone)]
struct Line {
    timestamp: String,
    filename: String,
    top: String,
    confidence: f64,
    time: f64,
}

/// Checks the header and the one-line-six-fields rule; returns the prediction lines.
fn parse_log(text: &str, stage: Stage) -> Vec<Line> {
    assert!(text.ends_with('\n'), "the log ends with a newline");
    for bad in [
        '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}',
    ] {
        assert!(!text.contains(bad), "the log holds a line break {bad:?}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let title = format!(
        "# Predicciones para {} - Iniciado el ",
        stage.as_str().to_uppercase()
    );
    let started = lines[0].strip_prefix(&title).expect("the title line");
    assert_rfc3339_micros(started);
    assert_eq!(lines[1], HEADER_FORMAT);
    assert_eq!(lines[2], "");
    lines[3..]
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(fields.len(), 6, "six fields: {line}");
            assert_rfc3339_micros(fields[0]);
            assert!(fields[1].chars().count() <= 255, "{line}");
            assert!(!fields[1].chars().any(char::is_control), "{line}");
            for number in [fields[3], fields[4]] {
                let (_, decimals) = number.split_once('.').expect("a decimal point");
                assert_eq!(decimals.len(), 4, "four decimals: {line}");
            }
            let all: Value = serde_json::from_str(fields[5]).expect("the last field is JSON");
            let labels = all["predictions"].as_array().expect("predictions");
            let scores = all["confidence_scores"].as_array().expect("scores");
            assert_eq!(labels.len(), scores.len(), "{line}");
            assert!(fields[5].starts_with("{\"predictions\": [\""), "{line}");
            Line {
                timestamp: fields[0].to_owned(),
                filename: fields[1].to_owned(),
                top: fields[2].to_owned(),
                confidence: fields[3].parse().expect("confidence"),
                time: fields[4].parse().expect("processing time"),
            }
        })
        .collect()
}

fn assert_rfc3339_micros(text: &str) {
    let parsed = DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(parsed.offset().local_minus_utc(), 0, "{text}");
    assert_eq!(
        text.len(),
        "2026-12-04T15:34:20.000001+00:00".len(),
        "{text}"
    );
}

// ----- S3 clients, buckets, request counting -----

/// Requests and bytes exchanged through one S3 client.
#[derive(Debug, Default)]
struct Traffic {
    requests: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::SeqCst),
            self.sent.load(Ordering::SeqCst),
            self.received.load(Ordering::SeqCst),
        )
    }
}

/// Counts every HTTP request the SDK transmits (retries included) and the bytes each way: request
/// and status lines, headers and bodies.
#[derive(Debug)]
struct CountTraffic(Arc<Traffic>);

impl Intercept for CountTraffic {
    fn name(&self) -> &'static str {
        "CountTraffic"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let body = request
            .headers()
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .or_else(|| request.body().content_length())
            .unwrap_or(0);
        let line = request.method().len() + request.uri().len() + 11;
        let headers = header_bytes(request.headers().iter());
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        self.0
            .sent
            .fetch_add(line as u64 + headers + body, Ordering::SeqCst);
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        let body: u64 = response
            .headers()
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let total = 17 + header_bytes(response.headers().iter()) + body;
        self.0.received.fetch_add(total, Ordering::SeqCst);
        Ok(())
    }
}

/// The bytes of HTTP/1.1 header lines (`name: value\r\n`).
fn header_bytes<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    headers
        .map(|(name, value)| (name.len() + value.len() + 4) as u64)
        .sum()
}

async fn s3_client(endpoint: &str, traffic: Option<Arc<Traffic>>) -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    let mut config = s3::client_config(&sdk, Some(endpoint));
    if let Some(traffic) = traffic {
        config = config.interceptor(CountTraffic(traffic));
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

async fn new_bucket(client: &aws_sdk_s3::Client) -> String {
    let name = format!("plog-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating bucket {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    // SeaweedFS allocates storage for a new bucket on its first write, which can take longer
    // than a log write may; a first object outside the log keeps that out of the tests.
    client
        .put_object()
        .bucket(&name)
        .key("warm-up")
        .body(b"warm-up".to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "writing to {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    name
}

async fn count_objects(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> usize {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += page.expect("listing").contents().len();
    }
    count
}

// ----- concurrency: no line lost or duplicated -----

/// Fires `total` predictions from 8 tasks, spreading them over `states` in turn.
async fn fire(states: &[AppState], total: usize, prefix: &str) -> HashSet<String> {
    const TASKS: usize = 8;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let states = states.to_vec();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut names = Vec::new();
            for i in (task..total).step_by(TASKS) {
                let name = format!("{prefix}-{i:03}.png");
                predict(&states[i % states.len()], &name).await;
                names.push(name);
            }
            names
        }));
    }
    let mut names = HashSet::new();
    for task in tasks {
        names.extend(task.await.expect("a prediction task panicked"));
    }
    assert_eq!(names.len(), total);
    names
}

fn assert_exactly(lines: &[Line], expected: &HashSet<String>) {
    let mut seen = HashMap::<&str, usize>::new();
    for line in lines {
        *seen.entry(line.filename.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated lines: {duplicated:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|n| !seen.contains_key(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "lost lines: {missing:?}");
    assert_eq!(lines.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_keeps_every_line_of_64_concurrent_predictions_from_three_instances() {
    let endpoint = seaweed_url();
    let admin = s3_client(&endpoint, None).await;
    let bucket = new_bucket(&admin).await;
    // Two Lambda-style instances writing inline and one local server writing in the background,
    // each with its own client, all on the same stage's log.
    let mut states = Vec::new();
    for mode in [WriteMode::Inline, WriteMode::Inline, WriteMode::Background] {
        let client = s3_client(&endpoint, None).await;
        states.push(state(Stage::Dev, s3_log(Stage::Dev, client, &bucket, mode)));
    }

    let started = Instant::now();
    let expected = fire(&states, 64, "s3").await;
    let elapsed = started.elapsed();
    for state in &states {
        state.log.flush().await; // what a clean shutdown does
        assert_eq!(state.log.write_failures(), 0);
    }
    eprintln!("64 concurrent predictions over S3 in {elapsed:.2?}");

    // A fresh process reads the log back.
    let reader = state(
        Stage::Dev,
        s3_log(
            Stage::Dev,
            s3_client(&endpoint, None).await,
            &bucket,
            WriteMode::Inline,
        ),
    );
    let lines = parse_log(&download(&reader).await, Stage::Dev);
    assert_exactly(&lines, &expected);
    assert_eq!(stats(&reader).await["total_predictions"], 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_directory_keeps_every_line_of_64_concurrent_predictions() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inline = PredictionLog::local(Stage::Dev, dir.path());
    let store = Arc::new(LocalStore::new(Stage::Dev, dir.path()));
    let background = PredictionLog::new(
        Stage::Dev,
        store.clone(),
        Duration::from_secs(1),
        WriteMode::Background,
    );
    let states = [state(Stage::Dev, inline), state(Stage::Dev, background)];

    let started = Instant::now();
    let expected = fire(&states, 64, "local").await;
    eprintln!(
        "64 concurrent predictions to a local file in {:.2?}",
        started.elapsed()
    );
    for state in &states {
        state.log.flush().await;
        assert_eq!(state.log.write_failures(), 0);
    }

    let reader = state(Stage::Dev, PredictionLog::local(Stage::Dev, dir.path()));
    let text = download(&reader).await;
    assert_exactly(&parse_log(&text, Stage::Dev), &expected);
    let on_disk = std::fs::read_to_string(dir.path().join("logsdev/predicciones_dev.txt"))
        .expect("the log file");
    assert_eq!(on_disk, text, "the download is the file itself");
    assert_eq!(
        store.path(),
        dir.path().join("logsdev/predicciones_dev.txt")
    );
}

// ----- the cost of a write does not depend on the log's length -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_write_cost_does_not_grow_with_the_log() {
    const PREDICTIONS: u64 = 5;
    const SEEDED: usize = 10_000;
    let endpoint = seaweed_url();
    let admin = s3_client(&endpoint, None).await;
    let bucket = new_bucket(&admin).await;

    // Each measurement uses a new instance (as a new Lambda would), counting its own traffic.
    let measure = |round: &'static str| {
        let (endpoint, bucket) = (endpoint.clone(), bucket.clone());
        async move {
            let traffic = Arc::new(Traffic::default());
            let client = s3_client(&endpoint, Some(traffic.clone())).await;
            let service = state(
                Stage::Dev,
                s3_log(Stage::Dev, client, &bucket, WriteMode::Inline),
            );
            for i in 0..PREDICTIONS {
                predict(&service, &format!("{round}-{i}.png")).await;
            }
            assert_eq!(service.log.write_failures(), 0);
            let (requests, sent, received) = traffic.snapshot();
            (
                requests as f64 / PREDICTIONS as f64,
                (sent + received) as f64 / PREDICTIONS as f64,
            )
        }
    };

    let (requests_empty, bytes_empty) = measure("empty").await;

    let seeded = Instant::now();
    let store = S3Store::new(admin.clone(), &bucket, Stage::Dev);
    let base = Utc::now() - chrono::Duration::hours(1);
    let lines: Vec<LogLine> = (0..SEEDED)
        .map(|i| {
            let at = base + chrono::Duration::milliseconds(i as i64);
            LogLine::new(&entry(at, &format!("seed-{i}.jpg"), "tabby", 0.5, 0.1))
        })
        .collect();
    seed(&store, &lines, 64).await;
    let seed_time = seeded.elapsed();

    let (requests_full, bytes_full) = measure("full").await;
    eprintln!(
        "per prediction: {requests_empty} requests, {bytes_empty:.0} bytes with an empty \
         log; {requests_full} requests, {bytes_full:.0} bytes with {SEEDED} lines \
         (seeded as {SEEDED} objects in {seed_time:.2?})"
    );
    assert_eq!(requests_empty, 1.0, "one PUT per prediction");
    assert_eq!(requests_full, requests_empty);
    assert!(bytes_empty < 4_000.0, "{bytes_empty} bytes per prediction");
    assert!(
        (bytes_full - bytes_empty).abs() <= 0.05 * bytes_empty,
        "{bytes_empty} -> {bytes_full} bytes per prediction"
    );

    // And the log still reads whole: the seeded lines, then the two rounds.
    let reader = state(
        Stage::Dev,
        s3_log(Stage::Dev, admin, &bucket, WriteMode::Inline),
    );
    let read = Instant::now();
    let text = download(&reader).await;
    eprintln!(
        "downloading {} lines took {:.2?}",
        SEEDED + 10,
        read.elapsed()
    );
    let lines = parse_log(&text, Stage::Dev);
    assert_eq!(lines.len(), SEEDED + 2 * PREDICTIONS as usize);
    assert_eq!(lines[0].filename, "seed-0.jpg");
    assert_eq!(
        lines[SEEDED - 1].filename,
        format!("seed-{}.jpg", SEEDED - 1)
    );
    assert!(lines[SEEDED].filename.starts_with("empty-"));
}

// ----- a failing store never fails or stalls a prediction -----

/// A tracing subscriber writing into a buffer, for the service's own log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture lock")).into_owned()
    }
}

/// Writes to one store and reads from another: a dead bucket for the predictions, a live one for
/// the stats route, so the failure counter can be read over HTTP.
struct WriteElsewhere {
    writes: S3Store,
    reads: S3Store,
}

impl LogStore for WriteElsewhere {
    fn append<'a>(
        &'a self,
        lines: &'a [LogLine],
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        self.writes.append(lines)
    }
    fn read(
        &self,
    ) -> futures_util::future::BoxFuture<
        '_,
        anyhow::Result<Option<densenet_api::prediction_log::ByteStream>>,
    > {
        self.reads.read()
    }
    fn clear(&self, at: DateTime<Utc>) -> futures_util::future::BoxFuture<'_, anyhow::Result<()>> {
        self.reads.clear(at)
    }
    fn bucket(&self) -> Option<&str> {
        self.reads.bucket()
    }
}

/// A TCP server that accepts connections and never answers.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{address}")
}

/// A port where nothing listens.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_slow_or_missing_bucket_neither_fails_nor_stalls_predict() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    // Scheduling on two cores shared with the other tests' inferences.
    const SLACK: Duration = Duration::from_millis(1000);
    let live_endpoint = seaweed_url();
    let live = s3_client(&live_endpoint, None).await;
    let bucket = new_bucket(&live).await;
    let targets = [
        ("closed port", closed_port().await, "logs".to_owned()),
        ("silent server", silent_server().await, "logs".to_owned()),
        // moto answers NoSuchBucket as AWS does; SeaweedFS under load was once seen to accept
        // a write to a bucket that had never been created.
        ("missing bucket", moto_url(), format!("{bucket}-missing")),
    ];

    for (what, endpoint, dead_bucket) in targets {
        for mode in [WriteMode::Inline, WriteMode::Background] {
            let store = WriteElsewhere {
                writes: S3Store::new(
                    s3_client(&endpoint, None).await,
                    dead_bucket.clone(),
                    Stage::Dev,
                ),
                reads: S3Store::new(live.clone(), bucket.clone(), Stage::Dev),
            };
            let log = PredictionLog::new(Stage::Dev, Arc::new(store), TIMEOUT, mode);
            let service = state(Stage::Dev, log);
            let captured = Captured::default();

            let started = Instant::now();
            let (status, body) = send_json(&service, predict_request("dog.jpg"))
                .with_subscriber(captured.subscriber())
                .await;
            let elapsed = started.elapsed();
            assert_eq!(status, StatusCode::OK, "{what}, {mode:?}: {body}");
            let inference =
                Duration::from_secs_f64(body["inference_time_ms"].as_f64().unwrap() / 1e3);
            let bound = match mode {
                WriteMode::Inline => TIMEOUT + inference + SLACK,
                WriteMode::Background => inference + SLACK,
            };
            eprintln!(
                "{what}, {mode:?}: /predict answered in {elapsed:.2?} (inference {inference:.2?})"
            );
            assert!(
                elapsed <= bound,
                "{what}, {mode:?}: {elapsed:?} > {bound:?}"
            );
            if what == "silent server" && mode == WriteMode::Inline {
                assert!(
                    elapsed >= TIMEOUT,
                    "the write waited for its timeout: {elapsed:?}"
                );
            }

            service
                .log
                .flush()
                .with_subscriber(captured.subscriber())
                .await;
            assert_eq!(service.log.write_failures(), 1, "{what}, {mode:?}");
            let stats = stats(&service).await;
            assert_eq!(stats["log_write_failures"], 1, "{what}, {mode:?}");
            assert_eq!(stats["total_predictions"], 0);
            if mode == WriteMode::Inline {
                // The background writer's events go to the subscriber of the task that spawned
                // it; the inline write's to the request's.
                let logs = captured.text();
                assert!(
                    logs.contains("WARN") && logs.contains("prediction log write failed"),
                    "{what}: {logs}"
                );
                assert!(logs.contains("log_write_failures=1"), "{what}: {logs}");
            }
        }
    }
}

/// A TCP proxy to `upstream` that forwards the first connection's request but hangs up instead of
/// passing on the answer, as a network failure after S3 stored an object would; later
/// connections pass through. Returns its URL and the count of connections.
async fn answer_losing_proxy(upstream: &str) -> (String, Arc<AtomicU64>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let connections = Arc::new(AtomicU64::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let lose = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                if lose {
                    let forward = tokio::io::copy(&mut from_client, &mut to_server);
                    let mut answer = [0; 1];
                    tokio::select! {
                        _ = forward => {}
                        _ = from_server.read(&mut answer) => {}
                    }
                    return; // both sockets close, the answer unsent
                }
                let up = tokio::io::copy(&mut from_client, &mut to_server);
                let down = tokio::io::copy(&mut from_server, &mut to_client);
                let _ = tokio::join!(up, down);
            });
        }
    });
    (format!("http://{address}"), connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_stored_exactly_once() {
    let endpoint = seaweed_url();
    let admin = s3_client(&endpoint, None).await;
    let bucket = new_bucket(&admin).await;
    let (proxy, connections) = answer_losing_proxy(&endpoint).await;
    let store = S3Store::new(s3_client(&proxy, None).await, &bucket, Stage::Dev);

    let line = LogLine::new(&entry(Utc::now(), "once.png", "tabby", 0.5, 0.1));
    store
        .append(std::slice::from_ref(&line))
        .await
        .expect("the write succeeds on the SDK's retry");
    assert!(
        connections.load(Ordering::SeqCst) >= 2,
        "the SDK sent the write again"
    );
    let prefix = "logsdev/predicciones_dev/lines/";
    assert_eq!(count_objects(&admin, &bucket, prefix).await, 1);
    let reader = state(
        Stage::Dev,
        s3_log(Stage::Dev, admin, &bucket, WriteMode::Inline),
    );
    let lines = parse_log(&download(&reader).await, Stage::Dev);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].filename, "once.png");
}

// ----- hostile filenames -----

fn multipart_with_filename(filename: &[u8]) -> Request<Body> {
    let boundary = "plog-boundary-5dkfj3";
    let png = base64::engine::general_purpose::STANDARD
        .decode(png_base64())
        .expect("base64");
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"")
            .as_bytes(),
    );
    body.extend_from_slice(filename);
    body.extend_from_slice(b"\"\r\nContent-Type: image/png\r\n\r\n");
    body.extend_from_slice(&png);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Request::post("/predict")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filenames_cannot_break_the_one_line_six_fields_rule() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let service = state(Stage::Dev, PredictionLog::local(Stage::Dev, dir.path()));
    let long = "k".repeat(10 * 1024);
    let names = [
        "pipe|in|name.jpg",
        "new\nline.jpg",
        "carriage\r\nreturn.jpg",
        "nul\0bell\u{7}esc\u{1b}del\u{7f}.jpg",
        "nel\u{85}ls\u{2028}ps\u{2029}vt\u{b}ff\u{c}.jpg",
        long.as_str(),
        "",
        "ünïcödé 猫.jpg",
    ];
    for name in names {
        predict(&service, name).await;
    }
    let raw_names: [&[u8]; 3] = [
        b"bad\xff\xfe|utf8.png",
        b"caf\xc3\xa9.png",
        b"\xc0\x80|x.png",
    ];
    let mut accepted = 0;
    for raw in raw_names {
        let (status, body) = send_json(&service, multipart_with_filename(raw)).await;
        assert!(
            status == StatusCode::OK || status.is_client_error(),
            "{status}: {body}"
        );
        accepted += usize::from(status == StatusCode::OK);
    }

    let text = download(&service).await;
    let lines = parse_log(&text, Stage::Dev);
    assert_eq!(lines.len(), names.len() + accepted, "{text}");
    assert_eq!(lines[0].filename, "pipe_in_name.jpg");
    assert_eq!(lines[1].filename, "new_line.jpg");
    assert_eq!(lines[2].filename, "carriage__return.jpg");
    assert_eq!(lines[3].filename, "nul_bell_esc_del_.jpg");
    assert_eq!(lines[4].filename, "nel_ls_ps_vt_ff_.jpg");
    assert_eq!(lines[5].filename, "k".repeat(255));
    assert_eq!(lines[6].filename, "unknown");
    assert_eq!(lines[7].filename, "ünïcödé 猫.jpg");
    let stats = stats(&service).await;
    assert_eq!(stats["total_predictions"], lines.len());
}

// ----- statistics, views and limits -----

/// The statistics recomputed from the downloaded text, independently of the service.
fn recount(text: &str, lines: &[Line]) -> BTreeMap<&'static str, Value> {
    let n = lines.len() as f64;
    let round4 = |x: f64| (x * 10_000.0).round() / 10_000.0;
    let mut times: Vec<f64> = lines.iter().map(|l| l.time).collect();
    times.sort_by(f64::total_cmp);
    let rank = |p: f64| times[((p * n).ceil() as usize).max(1) - 1];
    let mut counts = HashMap::<&str, u64>::new();
    for line in lines {
        *counts.entry(&line.top).or_default() += 1;
    }
    let mut top: Vec<(&str, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(10);
    let last = lines.last().expect("a prediction");
    BTreeMap::from([
        ("total_predictions", json!(lines.len())),
        ("file_size_bytes", json!(text.len())),
        (
            "avg_confidence",
            json!(round4(lines.iter().map(|l| l.confidence).sum::<f64>() / n)),
        ),
        (
            "avg_processing_time",
            json!(round4(lines.iter().map(|l| l.time).sum::<f64>() / n)),
        ),
        ("p50_processing_time", json!(rank(0.5))),
        ("p95_processing_time", json!(rank(0.95))),
        (
            "top_classes",
            Value::Object(
                top.into_iter()
                    .map(|(k, v)| (k.to_owned(), json!(v)))
                    .collect(),
            ),
        ),
        (
            "last_prediction",
            json!({"timestamp": last.timestamp, "filename": last.filename,
                   "top_prediction": last.top, "confidence": last.confidence}),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_and_views_agree_with_a_recount_of_the_download() {
    let endpoint = seaweed_url();
    let client = s3_client(&endpoint, None).await;
    let bucket = new_bucket(&client).await;
    let service = state(
        Stage::Dev,
        s3_log(Stage::Dev, client.clone(), &bucket, WriteMode::Background),
    );

    // 150 seeded lines over 14 labels, written in no particular order, then real predictions.
    let base = Utc::now() - chrono::Duration::minutes(10);
    let seeded: Vec<LogLine> = (0..150)
        .map(|i| {
            let at = base + chrono::Duration::microseconds(i * 1_337);
            let label = format!("class {}", (i % 14 + i % 5) % 14);
            let confidence = 0.3 + (i % 7) as f64 / 10.0;
            let time = 0.01 + (i % 23) as f64 / 100.0;
            LogLine::new(&entry(
                at,
                &format!("seed-{i}.png"),
                &label,
                confidence,
                time,
            ))
        })
        .collect();
    seed(
        &S3Store::new(client.clone(), &bucket, Stage::Dev),
        &seeded,
        16,
    )
    .await;
    for i in 0..3 {
        predict(&service, &format!("real-{i}.png")).await;
    }

    let text = download(&service).await;
    let lines = parse_log(&text, Stage::Dev);
    assert_eq!(lines.len(), 153);
    assert_eq!(
        text.lines().next(),
        Some(
            format!(
                "# Predicciones para DEV - Iniciado el {}",
                lines[0].timestamp
            )
            .as_str()
        ),
        "a log never cleared starts at its first line"
    );
    let timestamps: Vec<&str> = lines.iter().map(|l| l.timestamp.as_str()).collect();
    assert!(timestamps.is_sorted(), "oldest first");
    assert_eq!(lines[0].filename, "seed-0.png");
    assert_eq!(lines[152].filename, "real-2.png");

    let stats = stats(&service).await;
    for (key, expected) in recount(&text, &lines) {
        assert_eq!(stats[key], expected, "{key}: {stats}");
    }
    assert_eq!(stats["file_exists"], true);
    assert_eq!(stats["stage"], "dev");
    assert_eq!(stats["bucket"], bucket.as_str());
    assert_eq!(stats["file_key"], "logsdev/predicciones_dev.txt");
    assert_eq!(stats["log_write_failures"], 0);
    assert_eq!(stats["top_classes"].as_object().unwrap().len(), 10);

    // The view: the header and the last N lines, the same stats.
    let header: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let tail = |n: usize| -> String {
        let all: Vec<&str> = text.lines().collect();
        all[all.len() - n..]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    };
    for (uri, shown) in [
        ("/logs/predictions?limit=5", 5),
        ("/logs/predictions", 100),
        ("/logs/predictions?limit=10000", 153),
    ] {
        let (status, view) = send_json(&service, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {view}");
        assert_eq!(view["stage"], "dev");
        assert_eq!(view["stats"], stats, "{uri}");
        assert_eq!(view["content"], format!("{header}{}", tail(shown)), "{uri}");
    }
    let (_, whole) = send_json(&service, get("/logs/predictions?limit=10000")).await;
    assert_eq!(whole["content"], text, "the whole view is the download");
    for bad in ["0", "10001", "-1", "ten", "1.5"] {
        let (status, body) =
            send_json(&service, get(&format!("/logs/predictions?limit={bad}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert_eq!(body["code"], "invalid_query");
        assert!(body["detail"].as_str().unwrap().contains("10000"), "{body}");
    }
}

// ----- stages, clearing -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stages_never_see_each_other_and_only_dev_clears() {
    let endpoint = seaweed_url();
    let client = s3_client(&endpoint, None).await;
    let bucket = new_bucket(&client).await;
    let dev = state(
        Stage::Dev,
        s3_log(Stage::Dev, client.clone(), &bucket, WriteMode::Inline),
    );
    let prod = state(
        Stage::Prod,
        s3_log(Stage::Prod, client.clone(), &bucket, WriteMode::Inline),
    );

    predict(&dev, "dev-1.png").await;
    predict(&dev, "dev-2.png").await;
    predict(&prod, "prod-1.png").await;
    let dev_lines = parse_log(&download(&dev).await, Stage::Dev);
    let prod_text = download(&prod).await;
    let prod_lines = parse_log(&prod_text, Stage::Prod);
    let names = |lines: &[Line]| lines.iter().map(|l| l.filename.clone()).collect::<Vec<_>>();
    assert_eq!(names(&dev_lines), ["dev-1.png", "dev-2.png"]);
    assert_eq!(names(&prod_lines), ["prod-1.png"]);
    assert_eq!(
        stats(&prod).await["file_key"],
        "logsprod/predicciones_prod.txt"
    );

    // prod refuses, and its log is untouched.
    let (status, body) = send_json(
        &prod,
        Request::delete("/logs/predictions")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"detail": "Operación solo permitida en entorno de desarrollo", "code": "forbidden_stage"})
    );
    assert_eq!(download(&prod).await, prod_text);

    // dev clears: a new header dated by the response, no lines, prod unaffected.
    let (status, body) = send_json(
        &dev,
        Request::delete("/logs/predictions")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Logs limpiados exitosamente");
    assert_eq!(body["stage"], "dev");
    let cleared_at = body["timestamp"].as_str().expect("timestamp");
    assert_rfc3339_micros(cleared_at);
    let text = download(&dev).await;
    assert_eq!(
        text.lines().next().unwrap(),
        format!("# Predicciones para DEV - Iniciado el {cleared_at}")
    );
    assert!(parse_log(&text, Stage::Dev).is_empty());
    let dev_stats = stats(&dev).await;
    assert_eq!(dev_stats["total_predictions"], 0);
    assert_eq!(dev_stats["file_exists"], true);
    assert_eq!(dev_stats["last_prediction"], Value::Null);
    assert_eq!(download(&prod).await, prod_text);
    assert_eq!(
        count_objects(&client, &bucket, "logsdev/predicciones_dev/lines/").await,
        0,
        "the cleared line objects are deleted"
    );

    predict(&dev, "dev-3.png").await;
    assert_eq!(
        names(&parse_log(&download(&dev).await, Stage::Dev)),
        ["dev-3.png"]
    );
    assert_eq!(
        names(&parse_log(&download(&prod).await, Stage::Prod)),
        ["prod-1.png"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_stages_are_separate_files_and_prod_cannot_clear() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = state(Stage::Dev, PredictionLog::local(Stage::Dev, dir.path()));
    let prod = state(Stage::Prod, PredictionLog::local(Stage::Prod, dir.path()));
    predict(&dev, "dev.png").await;
    predict(&prod, "prod.png").await;
    let prod_text = download(&prod).await;
    let delete = || {
        Request::delete("/logs/predictions")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&prod, delete()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(download(&prod).await, prod_text);
    assert_eq!(send(&dev, delete()).await.0, StatusCode::OK);
    assert!(parse_log(&download(&dev).await, Stage::Dev).is_empty());
    let prod_lines = parse_log(&download(&prod).await, Stage::Prod);
    assert_eq!(prod_lines.len(), 1);
    assert_eq!(prod_lines[0].filename, "prod.png");
    assert!(dir.path().join("logsprod/predicciones_prod.txt").is_file());
    let stats = stats(&dev).await;
    assert_eq!(stats["bucket"], Value::Null);
    assert_eq!(stats["file_key"], "logsdev/predicciones_dev.txt");
}

// ----- another S3 implementation -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_serves_the_same_log() {
    let endpoint = moto_url();
    let client = s3_client(&endpoint, None).await;
    let bucket = new_bucket(&client).await;
    let service = state(
        Stage::Dev,
        s3_log(Stage::Dev, client.clone(), &bucket, WriteMode::Inline),
    );

    // No log yet.
    let empty = stats(&service).await;
    assert_eq!(empty["file_exists"], false);
    assert_eq!(empty["total_predictions"], 0);
    assert_eq!(empty["file_size_bytes"], 0);
    assert_eq!(empty["avg_confidence"], Value::Null);
    assert_eq!(download(&service).await, "");
    let (_, view) = send_json(&service, get("/logs/predictions")).await;
    assert_eq!(view["content"], "");

    predict(&service, "one.png").await;
    predict(&service, "two.png").await;
    let lines = parse_log(&download(&service).await, Stage::Dev);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1].filename, "two.png");

    // Two clears: the first creates the marker, the second replaces it conditionally.
    for _ in 0..2 {
        let delete = Request::delete("/logs/predictions")
            .body(Body::empty())
            .unwrap();
        let (status, body) = send_json(&service, delete).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(parse_log(&download(&service).await, Stage::Dev).is_empty());
    }
    predict(&service, "three.png").await;
    let lines = parse_log(&download(&service).await, Stage::Dev);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].filename, "three.png");
    assert_eq!(stats(&service).await["total_predictions"], 1);
}

// ----- the binary: configuration, and the queue stored before it exits -----

/// One HTTP/1.1 request over a new connection; returns the status and the body.
async fn http(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.write_all(body).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 30 s")
        .expect("receive");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A TCP proxy to `upstream` that holds each chunk from the client for `delay`: an S3 server
/// that is slow but works.
async fn slow_proxy(upstream: &str, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        tokio::time::sleep(delay).await;
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                };
                let down = tokio::io::copy(&mut from_server, &mut to_client);
                let _ = tokio::join!(up, down);
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_logs_to_s3_and_stores_its_queue_before_exiting() {
    use std::io::BufRead;
    let endpoint = seaweed_url();
    let client = s3_client(&endpoint, None).await;
    let bucket = new_bucket(&client).await;
    // Each write takes at least 300 ms, so lines are still queued when the server is told to stop.
    let slow = slow_proxy(&endpoint, Duration::from_millis(300)).await;
    let model = required_env("TEST_MODEL_PATH", "make a test model");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_densenet-api"))
        .args(["serve", "--port", "0"])
        .env("MODEL_PATH", model)
        .env("STAGE", "prod")
        .env("LOGS_BUCKET", &bucket)
        .env("AWS_ENDPOINT_URL", &slow)
        .env("LOG_WRITE_TIMEOUT_MS", "10000")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the server");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    let addr = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(wait) else {
            let _ = child.kill();
            panic!("the server did not start:\n{}", log.join("\n"));
        };
        let address = line
            .split("address=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .map(str::to_owned);
        log.push(line);
        if let Some(address) = address {
            break address;
        }
    };

    let (status, body) = http(&addr, "DELETE /logs/predictions HTTP/1.1", b"").await;
    assert_eq!(status, 403, "{body}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(png_base64())
        .expect("base64");
    for i in 0..3 {
        let head =
            format!("POST /predict?filename=served-{i}.png HTTP/1.1\r\nContent-Type: image/png");
        let (status, body) = http(&addr, &head, &png).await;
        assert_eq!(status, 200, "{body}");
    }

    // Stop at once: whatever the writer still holds must reach the bucket before the exit.
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait")
        .expect("the server's exit status");
    assert!(status.success(), "{status}");
    log.extend(lines.try_iter());
    let log = log.join("\n");
    assert!(log.contains("prediction log in S3"), "{log}");
    assert!(log.contains("log_write_failures=0"), "{log}");

    let reader = state(
        Stage::Prod,
        s3_log(Stage::Prod, client, &bucket, WriteMode::Inline),
    );
    let names: Vec<String> = parse_log(&download(&reader).await, Stage::Prod)
        .into_iter()
        .map(|l| l.filename)
        .collect();
    assert_eq!(names, ["served-0.png", "served-1.png", "served-2.png"]);
}
