//! Service configuration: every environment variable the service reads, typed and validated once.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::inference::{DEFAULT_ONNXRUNTIME_LIBRARY, EngineKind};

/// The deployment stage whose prediction log this process reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Development: the log may be cleared.
    Dev,
    /// Production: the log is append-only through the API.
    Prod,
}

impl Stage {
    /// The stage's lower-case name, as used in log keys and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dev => "dev",
            Stage::Prod => "prod",
        }
    }
}

impl FromStr for Stage {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dev" => Ok(Stage::Dev),
            "prod" => Ok(Stage::Prod),
            other => bail!("STAGE must be `dev` or `prod`, not {other:?}"),
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which origins browsers may call the API from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin (never with credentials).
    Any,
    /// Only these exact origins.
    List(Vec<String>),
}

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `MODEL_PATH`: the ONNX model file. Default `models/densenet121_Opset17.onnx`.
    pub model_path: PathBuf,
    /// `PREPARED_MODEL_PATH`: the model prepared from `MODEL_PATH` by `densenet-api
    /// prepare-model`, which the tract engine loads instead, for a faster start. Unset: none.
    pub prepared_model_path: Option<PathBuf>,
    /// `MODEL_NAME`: the name reported for the model. Default `DenseNet121`.
    pub model_name: String,
    /// `LABELS_PATH`: a file of class names, one per line, overriding the built-in ImageNet list.
    pub labels_path: Option<PathBuf>,
    /// `STAGE`: `dev` or `prod`. Default `dev`.
    pub stage: Stage,
    /// `LOGS_BUCKET`: the S3 bucket of the prediction log; unset means a local directory.
    pub logs_bucket: Option<String>,
    /// `LOG_DIR`: the local prediction-log directory when no bucket is set. Default `data/logs`.
    pub log_dir: PathBuf,
    /// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`: an S3-compatible server for the log bucket
    /// (`http://` or `https://`), addressed path-style. Default: AWS's own endpoints.
    pub s3_endpoint_url: Option<String>,
    /// `LOG_WRITE_TIMEOUT_MS`: how long a prediction may wait for its log line to be stored.
    /// Default 1000.
    pub log_write_timeout: Duration,
    /// `MAX_BODY_BYTES`: the largest request body accepted. Default 6 MB, Lambda's synchronous
    /// payload limit.
    pub max_body_bytes: usize,
    /// `MAX_IMAGE_PIXELS`: the largest decoded image (width x height) accepted, against
    /// decompression bombs. Default 40 megapixels.
    pub max_image_pixels: u64,
    /// `DEFAULT_TOP_K`: how many predictions a request gets when it names none. Default 5.
    pub default_top_k: usize,
    /// `CORS_ALLOW_ORIGINS`: `*` or a comma-separated list of origins. Default `*`.
    pub cors_allow_origins: AllowedOrigins,
    /// `INFERENCE_THREADS`: threads for one inference's matrix products; 0 picks from the CPUs
    /// available. Default 0.
    pub inference_threads: usize,
    /// `ENGINE`: `tract` (default) or `onnxruntime` (a build with the `onnxruntime` feature).
    pub engine: EngineKind,
    /// `ORT_DYLIB_PATH`: ONNX Runtime's shared library, for `ENGINE=onnxruntime`. Default
    /// `libonnxruntime.so`, found on the loader's search path.
    pub onnxruntime_library: PathBuf,
    /// `MAX_CONCURRENT_INFERENCES`: decodes and inferences running at once; more wait their turn,
    /// which bounds memory. Default: the number of CPUs.
    pub max_concurrent_inferences: usize,
}

/// The default body limit: 6 MB, API Gateway's and Lambda's synchronous payload limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// The default decoded-pixel limit: 40 megapixels, 120 MB as RGB.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 40_000_000;

impl Default for Config {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            model_path: PathBuf::from("models/densenet121_Opset17.onnx"),
            prepared_model_path: None,
            model_name: "DenseNet121".to_owned(),
            labels_path: None,
            stage: Stage::Dev,
            logs_bucket: None,
            log_dir: PathBuf::from("data/logs"),
            s3_endpoint_url: None,
            log_write_timeout: Duration::from_millis(1000),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
            default_top_k: 5,
            cors_allow_origins: AllowedOrigins::Any,
            inference_threads: 0,
            engine: EngineKind::default(),
            onnxruntime_library: PathBuf::from(DEFAULT_ONNXRUNTIME_LIBRARY),
            max_concurrent_inferences: cpus,
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> anyhow::Result<Config> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Config::default();
        if let Some(v) = get("MODEL_PATH") {
            config.model_path = PathBuf::from(v);
        }
        config.prepared_model_path = get("PREPARED_MODEL_PATH").map(PathBuf::from);
        if let Some(v) = get("MODEL_NAME") {
            config.model_name = v.trim().to_owned();
        }
        config.labels_path = get("LABELS_PATH").map(PathBuf::from);
        if let Some(v) = get("STAGE") {
            config.stage = v.parse()?;
        }
        config.logs_bucket = get("LOGS_BUCKET").map(|v| v.trim().to_owned());
        if let Some(v) = get("LOG_DIR") {
            config.log_dir = PathBuf::from(v);
        }
        if let Some((name, v)) = get("AWS_ENDPOINT_URL_S3")
            .map(|v| ("AWS_ENDPOINT_URL_S3", v))
            .or_else(|| get("AWS_ENDPOINT_URL").map(|v| ("AWS_ENDPOINT_URL", v)))
        {
            config.s3_endpoint_url = Some(parse_endpoint(name, &v)?);
        }
        if let Some(v) = get("LOG_WRITE_TIMEOUT_MS") {
            config.log_write_timeout =
                Duration::from_millis(parse_number("LOG_WRITE_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("MAX_BODY_BYTES") {
            config.max_body_bytes =
                positive("MAX_BODY_BYTES", parse_number("MAX_BODY_BYTES", &v)?)?;
        }
        if let Some(v) = get("MAX_IMAGE_PIXELS") {
            config.max_image_pixels =
                positive("MAX_IMAGE_PIXELS", parse_number("MAX_IMAGE_PIXELS", &v)?)?;
        }
        if let Some(v) = get("DEFAULT_TOP_K") {
            config.default_top_k = positive("DEFAULT_TOP_K", parse_number("DEFAULT_TOP_K", &v)?)?;
        }
        if let Some(v) = get("CORS_ALLOW_ORIGINS") {
            config.cors_allow_origins = parse_origins(&v)?;
        }
        if let Some(v) = get("INFERENCE_THREADS") {
            config.inference_threads = parse_number("INFERENCE_THREADS", &v)?;
        }
        if let Some(v) = get("ENGINE") {
            config.engine = v.parse()?;
            if !config.engine.is_built_in() {
                bail!(
                    "ENGINE={} needs a build with the `{}` cargo feature \
                     (cargo build --release --features {})",
                    config.engine,
                    config.engine,
                    config.engine
                );
            }
        }
        if let Some(v) = get("ORT_DYLIB_PATH") {
            config.onnxruntime_library = PathBuf::from(v);
        }
        if let Some(v) = get("MAX_CONCURRENT_INFERENCES") {
            config.max_concurrent_inferences = positive(
                "MAX_CONCURRENT_INFERENCES",
                parse_number("MAX_CONCURRENT_INFERENCES", &v)?,
            )?;
        }
        Ok(config)
    }
}

impl Config {
    /// The threads one inference uses: `INFERENCE_THREADS`, or the CPUs available when 0. On
    /// Lambda that follows the memory setting (one vCPU per 1769 MB).
    pub fn effective_inference_threads(&self) -> usize {
        match self.inference_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

fn parse_number<T: FromStr>(name: &str, value: &str) -> anyhow::Result<T> {
    value
        .trim()
        .parse()
        .ok()
        .with_context(|| format!("{name} must be a whole number, not {value:?}"))
}

fn positive<T: Default + PartialEq>(name: &str, value: T) -> anyhow::Result<T> {
    if value == T::default() {
        bail!("{name} must be greater than zero");
    }
    Ok(value)
}

fn parse_endpoint(name: &str, value: &str) -> anyhow::Result<String> {
    let url = value.trim().trim_end_matches('/');
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if host.is_none_or(str::is_empty) {
        bail!(
            "{name} must be an http:// or https:// URL such as `http://127.0.0.1:8333`, not {value:?}"
        );
    }
    Ok(url.to_owned())
}

fn parse_origins(value: &str) -> anyhow::Result<AllowedOrigins> {
    if value.trim() == "*" {
        return Ok(AllowedOrigins::Any);
    }
    let origins: Vec<String> = value
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    for origin in &origins {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            bail!(
                "CORS_ALLOW_ORIGINS must be `*` or a comma-separated list of origins such as \
                 `https://app.example.com`, not {origin:?}"
            );
        }
    }
    Ok(AllowedOrigins::List(origins))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.stage, Stage::Dev);
        assert_eq!(c.max_body_bytes, 6 * 1024 * 1024);
        assert_eq!(
            c.model_path,
            PathBuf::from("models/densenet121_Opset17.onnx")
        );
        assert_eq!(c.cors_allow_origins, AllowedOrigins::Any);
        assert_eq!(c.logs_bucket, None);
        assert_eq!(c.log_write_timeout, Duration::from_secs(1));
        assert_eq!(c.s3_endpoint_url, None);
    }

    #[test]
    fn a_prepared_model_is_used_only_when_named() {
        assert_eq!(config(&[]).unwrap().prepared_model_path, None);
        let c = config(&[("PREPARED_MODEL_PATH", "/opt/model/m.nnef.tar")]).unwrap();
        assert_eq!(
            c.prepared_model_path,
            Some(PathBuf::from("/opt/model/m.nnef.tar"))
        );
        assert_eq!(
            config(&[("PREPARED_MODEL_PATH", "  ")])
                .unwrap()
                .prepared_model_path,
            None
        );
    }

    #[test]
    fn the_engine_is_tract_unless_engine_names_another() {
        let c = config(&[]).unwrap();
        assert_eq!(c.engine, EngineKind::Tract);
        assert_eq!(c.onnxruntime_library, PathBuf::from("libonnxruntime.so"));
        assert_eq!(
            config(&[("ENGINE", " Tract ")]).unwrap().engine,
            EngineKind::Tract
        );

        let error = config(&[("ENGINE", "tensorflow")]).unwrap_err().to_string();
        assert!(error.contains("`tract` or `onnxruntime`"), "{error}");

        let c = config(&[
            ("ENGINE", "onnxruntime"),
            ("ORT_DYLIB_PATH", "/opt/ort/libonnxruntime.so"),
        ]);
        if cfg!(feature = "onnxruntime") {
            let c = c.unwrap();
            assert_eq!(c.engine, EngineKind::OnnxRuntime);
            assert_eq!(
                c.onnxruntime_library,
                PathBuf::from("/opt/ort/libonnxruntime.so")
            );
        } else {
            let error = c.unwrap_err().to_string();
            assert!(error.contains("--features onnxruntime"), "{error}");
        }
    }

    #[test]
    fn the_s3_endpoint_prefers_the_service_specific_variable() {
        let c = config(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:8333/")]).unwrap();
        assert_eq!(c.s3_endpoint_url.as_deref(), Some("http://127.0.0.1:8333"));
        let c = config(&[
            ("AWS_ENDPOINT_URL", "http://a.example"),
            ("AWS_ENDPOINT_URL_S3", "https://s3.example"),
        ])
        .unwrap();
        assert_eq!(c.s3_endpoint_url.as_deref(), Some("https://s3.example"));
        let err = config(&[("AWS_ENDPOINT_URL", "127.0.0.1:8333")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");
    }

    #[test]
    fn reads_every_variable() {
        let c = config(&[
            ("STAGE", "PROD"),
            ("LOGS_BUCKET", "my-bucket"),
            ("MAX_BODY_BYTES", "1000"),
            ("MAX_IMAGE_PIXELS", "5000"),
            ("LOG_WRITE_TIMEOUT_MS", "250"),
            (
                "CORS_ALLOW_ORIGINS",
                "https://a.example, http://localhost:5173/",
            ),
            ("DEFAULT_TOP_K", "3"),
        ])
        .unwrap();
        assert_eq!(c.stage, Stage::Prod);
        assert_eq!(c.logs_bucket.as_deref(), Some("my-bucket"));
        assert_eq!(c.max_body_bytes, 1000);
        assert_eq!(c.max_image_pixels, 5000);
        assert_eq!(c.log_write_timeout, Duration::from_millis(250));
        assert_eq!(c.default_top_k, 3);
        assert_eq!(
            c.cors_allow_origins,
            AllowedOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:5173".into()
            ])
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("STAGE", "staging")]).unwrap_err().to_string();
        assert!(err.contains("STAGE"), "{err}");
        let err = config(&[("MAX_BODY_BYTES", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAX_BODY_BYTES"), "{err}");
        let err = config(&[("MAX_BODY_BYTES", "0")]).unwrap_err().to_string();
        assert!(err.contains("greater than zero"), "{err}");
        let err = config(&[("CORS_ALLOW_ORIGINS", "example.com")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CORS_ALLOW_ORIGINS"), "{err}");
    }
}
