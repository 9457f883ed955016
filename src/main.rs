//! The `densenet-api` binary: wiring only. Reads the configuration, loads the model once, builds
//! the state, then runs as the Lambda function, the local server or the command-line classifier.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region};
use clap::{Parser, Subcommand};
use densenet_api::classify::Classifier;
use densenet_api::config::{Config, Stage};
use densenet_api::inference::{self, EngineKind, LoadOptions};
use densenet_api::labels::Labels;
use densenet_api::prediction_log::{LocalStore, LogStore, PredictionLog, S3Store, WriteMode, s3};
use densenet_api::{AppState, cli, model_repo};

#[derive(Parser)]
#[command(
    version,
    about = "DenseNet121 image classification: AWS Lambda function, local server and CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API locally (the default without a subcommand outside Lambda).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "HOST", default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Port to listen on.
        #[arg(long, env = "PORT", default_value_t = 3000)]
        port: u16,
    },
    /// Classify image files and print the top-k classes of each.
    Predict {
        /// Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many classes to print per image.
        #[arg(short = 'k', long, default_value_t = 5)]
        top_k: usize,
        /// Print the API's JSON response for each image instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prepare the ONNX model for a faster start with the tract engine: do the graph work that
    /// every start would repeat once, and write the result for PREPARED_MODEL_PATH.
    PrepareModel {
        /// The ONNX model (default: MODEL_PATH).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Where to write the prepared model (an NNEF tar, e.g. model.nnef.tar).
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage the ECR repository that holds the model image.
    ModelRepo {
        #[command(subcommand)]
        action: ModelRepoAction,
        /// The stage whose repository (densenet121-model-STAGE) to use.
        #[arg(long, global = true, default_value = "dev")]
        stage: Stage,
        /// The AWS region (default: the AWS configuration's, e.g. AWS_REGION).
        #[arg(long, global = true)]
        region: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModelRepoAction {
    /// Create the repository if needed, with scan on push and a lifecycle policy; print its URI.
    Ensure,
    /// Print the digest-pinned URI of the newest model image.
    Resolve,
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

/// glibc's malloc gives each thread that allocates its own arena, up to eight per core, and an
/// arena keeps the memory of the largest work done on it: with inferences and decodes moving
/// between blocking threads, resident memory under load grew to about three times what one
/// inference needs. Two arenas serve two cores without measurable contention. An explicit
/// `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    init_tracing(in_lambda);

    match cli.command {
        Some(Command::Predict {
            images,
            top_k,
            json,
        }) => {
            let classifier = load_classifier(&config)?;
            cli::predict(&classifier, &images, top_k, json)
        }
        Some(Command::PrepareModel { model, out }) => {
            let model = model.unwrap_or_else(|| config.model_path.clone());
            let prepared = inference::prepare(&model, &out)
                .with_context(|| format!("preparing {} into {}", model.display(), out.display()))?;
            tracing::info!(
                model = %model.display(),
                out = %out.display(),
                bytes = prepared.bytes,
                onnx_sha256 = %prepared.onnx_sha256,
                elapsed_ms = prepared.elapsed_ms,
                "model prepared"
            );
            Ok(())
        }
        Some(Command::ModelRepo {
            action,
            stage,
            region,
        }) => {
            let region =
                RegionProviderChain::first_try(region.map(Region::new)).or_default_provider();
            let client = aws_sdk_ecr::Client::new(&load_aws_config(region).await);
            let uri = match action {
                ModelRepoAction::Ensure => model_repo::ensure(&client, stage.as_str()).await?,
                ModelRepoAction::Resolve => model_repo::resolve(&client, stage.as_str()).await?,
            };
            println!("{uri}");
            Ok(())
        }
        Some(Command::Serve { host, port }) => serve(config, SocketAddr::new(host, port)).await,
        None if in_lambda => run_lambda(config).await,
        None => serve(config, SocketAddr::from(([127, 0, 0, 1], 3000))).await,
    }
}

async fn run_lambda(config: Config) -> anyhow::Result<()> {
    // Lambda freezes the process after each response, so lines are stored before it.
    let state = build_state(config, WriteMode::Inline).await?;
    lambda_http::run(densenet_api::lambda_service(state))
        .await
        .map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
}

async fn serve(config: Config, addr: SocketAddr) -> anyhow::Result<()> {
    let state = build_state(config, WriteMode::Background).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (set --port or PORT to use another port)"))?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    densenet_api::serve(listener, state.clone(), shutdown_signal())
        .await
        .context("serving HTTP")?;
    state.log.flush().await;
    tracing::info!(log_write_failures = state.log.write_failures(), "stopped");
    Ok(())
}

/// Loads the model and log; a model that fails to load leaves the service up, answering 503.
async fn build_state(config: Config, log_mode: WriteMode) -> anyhow::Result<AppState> {
    let classifier = match load_classifier(&config) {
        Ok(classifier) => Some(classifier),
        Err(err) if err.is::<LabelsMismatch>() => return Err(err),
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "model failed to load; answering 503"
            );
            None
        }
    };
    let store: Arc<dyn LogStore> = match &config.logs_bucket {
        Some(bucket) => {
            let region = RegionProviderChain::default_provider().or_else("us-east-1");
            let sdk = load_aws_config(region).await;
            let s3_config = s3::client_config(&sdk, config.s3_endpoint_url.as_deref()).build();
            tracing::info!(bucket, stage = %config.stage, "prediction log in S3");
            Arc::new(S3Store::new(
                aws_sdk_s3::Client::from_conf(s3_config),
                bucket,
                config.stage,
            ))
        }
        None => {
            let store = LocalStore::new(config.stage, &config.log_dir);
            tracing::info!(path = %store.path().display(), "prediction log in a local file");
            Arc::new(store)
        }
    };
    let log = PredictionLog::new(config.stage, store, config.log_write_timeout, log_mode);
    Ok(AppState::new(config, classifier, log))
}

/// Marks a labels file that does not fit the model: a configuration error, fatal at start-up.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct LabelsMismatch(anyhow::Error);

fn load_classifier(config: &Config) -> anyhow::Result<Classifier> {
    let started = Instant::now();
    let labels = match &config.labels_path {
        Some(path) => Labels::from_file(path).map_err(LabelsMismatch)?,
        None => Labels::imagenet(),
    };
    let options = LoadOptions {
        engine: config.engine,
        onnxruntime_library: config.onnxruntime_library.clone(),
        prepared_model: config.prepared_model_path.clone(),
        ..LoadOptions::new(&config.model_name, config.effective_inference_threads())
    };
    let prepared = options
        .prepared_model
        .as_ref()
        .filter(|_| config.engine == EngineKind::Tract);
    let engine = inference::load(&config.model_path, &options).with_context(|| match prepared {
        Some(path) => format!(
            "loading the prepared model {} (PREPARED_MODEL_PATH; `densenet-api prepare-model` \
             makes it)",
            path.display()
        ),
        None => format!(
            "loading the model {} (set MODEL_PATH, or run scripts/fetch-model.sh)",
            config.model_path.display()
        ),
    })?;
    let classifier =
        Classifier::new(engine, labels, config.max_image_pixels).map_err(LabelsMismatch)?;
    let info = classifier.engine().info();
    tracing::info!(
        model = %prepared.unwrap_or(&config.model_path).display(),
        engine = %config.engine,
        runtime = %info.runtime,
        load_ms = info.load_time_ms,
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        "model ready"
    );
    Ok(classifier)
}

/// The AWS SDK configuration from the environment (credentials, `AWS_ENDPOINT_URL`), in the
/// first region that `region` finds.
async fn load_aws_config(region: RegionProviderChain) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tract=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        // Lambda's JSON log format: one object per line, no ANSI, no timestamp (CloudWatch adds it).
        builder.json().without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
