//! The log in an S3 bucket (or any S3-compatible server): one object per write, read back in key
//! order. The layout under `logs{S}/predicciones_{S}/` is described in the parent module.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt, stream};

use super::{ByteStream, LogLine, LogStore, format};
use crate::config::Stage;

/// Line objects fetched at once while reading.
const READ_CONCURRENCY: usize = 32;
/// Attempts at a conditional write before giving up.
const CONDITIONAL_ATTEMPTS: usize = 5;
/// The time format of keys: fixed width, so the lexical order of keys is their time order.
const KEY_TIME: &str = "%Y%m%dT%H%M%S%.6fZ";
/// The length of a formatted key time, `20261204T153420.000001Z`.
const KEY_TIME_LEN: usize = 23;
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Bounds each S3 call, reads included, so a server that stops answering cannot hold a request
/// for ever (writes are bounded tighter, by `LOG_WRITE_TIMEOUT_MS`). Log objects are small.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The S3 client configuration for the log: the shared AWS configuration with bounded calls, and
/// path-style addressing when an endpoint URL (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) names
/// an S3-compatible server, which rarely serves bucket subdomains.
pub fn client_config(
    sdk: &aws_config::SdkConfig,
    endpoint_url: Option<&str>,
) -> aws_sdk_s3::config::Builder {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    let builder = aws_sdk_s3::config::Builder::from(sdk).timeout_config(timeouts);
    match endpoint_url {
        Some(url) => builder.endpoint_url(url).force_path_style(true),
        None => builder,
    }
}

/// A stage's log in a bucket.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    stage: Stage,
    /// `logs{S}/predicciones_{S}/lines/`.
    lines_prefix: String,
    /// `logs{S}/predicciones_{S}/cleared`.
    cleared_key: String,
}

/// The clear marker: when the log was last cleared, and the object's ETag.
struct Cleared {
    at: DateTime<Utc>,
    etag: Option<String>,
}

impl S3Store {
    /// The log of `stage` in `bucket`, through a client created once at start-up.
    pub fn new(client: Client, bucket: impl Into<String>, stage: Stage) -> Self {
        let s = stage.as_str();
        let base = format!("logs{s}/predicciones_{s}/");
        S3Store {
            inner: Arc::new(Inner {
                client,
                bucket: bucket.into(),
                stage,
                lines_prefix: format!("{base}lines/"),
                cleared_key: format!("{base}cleared"),
            }),
        }
    }
}

impl Inner {
    /// Stores `body` under a new key. `If-None-Match: *` makes S3 refuse to replace an existing
    /// object, so no line ever overwrites another. A refusal usually means this very write
    /// landed and its answer was lost, so the SDK sent it again: the object then holds `body` and
    /// the write is done; only a (vanishingly unlikely) key clash with another line takes a new
    /// key. Either way each line is stored exactly once.
    async fn put_new(&self, time: DateTime<Utc>, body: Bytes) -> anyhow::Result<()> {
        let mut key = line_key(&self.lines_prefix, time);
        for _ in 0..CONDITIONAL_ATTEMPTS {
            let result = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type(TEXT_PLAIN)
                .if_none_match("*")
                .body(SdkByteStream::from(body.clone()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_precondition_failed(&e) => {
                    if self.get(key.clone()).await? == body {
                        return Ok(());
                    }
                    key = line_key(&self.lines_prefix, time);
                }
                // Another conditional write to this key is in flight: ask again.
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(self.error(e, "writing", &key)),
            }
        }
        anyhow::bail!(
            "s3://{}/{key} stayed contended after {CONDITIONAL_ATTEMPTS} attempts",
            self.bucket
        )
    }

    async fn cleared(&self) -> anyhow::Result<Option<Cleared>> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.cleared_key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.error(e, "reading", &self.cleared_key)),
        };
        let etag = output.e_tag().map(str::to_owned);
        let body = output
            .body
            .collect()
            .await
            .with_context(|| format!("reading s3://{}/{}", self.bucket, self.cleared_key))?
            .into_bytes();
        let text = String::from_utf8_lossy(&body);
        let at = DateTime::parse_from_rfc3339(text.trim())
            .with_context(|| format!("s3://{}/{} holds no time", self.bucket, self.cleared_key))?
            .with_timezone(&Utc);
        Ok(Some(Cleared { at, etag }))
    }

    /// Records a clear at `at`. The marker is one object that every clear updates, so the update
    /// is conditional (`If-None-Match: *` when absent, `If-Match: <etag>` when present): of two
    /// simultaneous clears the later time always wins, never the last writer.
    async fn mark_cleared(&self, at: DateTime<Utc>) -> anyhow::Result<()> {
        for _ in 0..CONDITIONAL_ATTEMPTS {
            let current = self.cleared().await?;
            if current.as_ref().is_some_and(|c| c.at >= at) {
                return Ok(());
            }
            let request = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.cleared_key)
                .content_type(TEXT_PLAIN)
                .body(SdkByteStream::from(format::timestamp(at).into_bytes()));
            let request = match current.and_then(|c| c.etag) {
                Some(etag) => request.if_match(etag),
                None => request.if_none_match("*"),
            };
            match request.send().await {
                Ok(_) => return Ok(()),
                Err(e) if is_precondition_failed(&e) || is_conflict(&e) => continue,
                Err(e) => return Err(self.error(e, "writing", &self.cleared_key)),
            }
        }
        anyhow::bail!("the log kept changing while being cleared; try again")
    }

    /// One page of line keys.
    async fn list(
        &self,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> anyhow::Result<(Vec<String>, Option<String>)> {
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.lines_prefix);
        match token {
            Some(token) => request = request.continuation_token(token),
            None => {
                if let Some(key) = start_after {
                    request = request.start_after(key);
                }
            }
        }
        let output = request
            .send()
            .await
            .map_err(|e| self.error(e, "listing", &self.lines_prefix))?;
        let keys = output
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        let next = output
            .is_truncated()
            .unwrap_or(false)
            .then(|| output.next_continuation_token().map(str::to_owned))
            .flatten();
        Ok((keys, next))
    }

    /// One line object's text; an object deleted meanwhile (by a clear) reads as empty.
    async fn get(&self, key: String) -> anyhow::Result<Bytes> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(Bytes::new()),
            Err(e) => return Err(self.error(e, "reading", &key)),
        };
        Ok(output
            .body
            .collect()
            .await
            .with_context(|| format!("reading s3://{}/{key}", self.bucket))?
            .into_bytes())
    }

    /// Deletes the line objects written before `before`, which readers already skip; failures
    /// only leave hidden objects behind, so they are logged, not returned.
    async fn delete_before(&self, before: DateTime<Utc>) {
        let boundary = boundary_key(&self.lines_prefix, before);
        let mut token = None;
        loop {
            let (keys, next) = match self.list(None, token).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "listing cleared lines failed");
                    return;
                }
            };
            let done = next.is_none() || keys.last().is_some_and(|k| *k >= boundary);
            let old: Vec<ObjectIdentifier> = keys
                .into_iter()
                .take_while(|k| *k < boundary)
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if !old.is_empty()
                && let Err(err) = self.delete(old).await
            {
                tracing::warn!(error = format!("{err:#}"), "deleting cleared lines failed");
                return;
            }
            if done {
                return;
            }
            token = next;
        }
    }

    async fn delete(&self, objects: Vec<ObjectIdentifier>) -> anyhow::Result<()> {
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .context("building a delete request")?;
        let output = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| self.error(e, "deleting under", &self.lines_prefix))?;
        if let Some(e) = output.errors().first() {
            anyhow::bail!(
                "deleting s3://{}/{}: {}",
                self.bucket,
                e.key().unwrap_or_default(),
                e.message().unwrap_or_default()
            );
        }
        Ok(())
    }

    fn error<E, R>(&self, err: SdkError<E, R>, action: &str, key: &str) -> anyhow::Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: HasStatus + std::fmt::Debug,
    {
        anyhow::anyhow!("{action} s3://{}/{key}: {}", self.bucket, describe(&err))
    }
}

impl LogStore for S3Store {
    fn append<'a>(&'a self, lines: &'a [LogLine]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(first) = lines.first() else {
                return Ok(());
            };
            let text: String = lines.iter().map(|l| l.text.as_str()).collect();
            self.inner.put_new(first.timestamp, Bytes::from(text)).await
        })
    }

    fn read(&self) -> BoxFuture<'_, anyhow::Result<Option<ByteStream>>> {
        Box::pin(async move {
            let inner = self.inner.clone();
            let cleared = inner.cleared().await?;
            let start_after = cleared
                .as_ref()
                .map(|c| boundary_key(&inner.lines_prefix, c.at));
            let (first_keys, next) = inner.list(start_after.as_deref(), None).await?;
            let started = match (&cleared, first_keys.first()) {
                (Some(c), _) => c.at,
                (None, Some(key)) => key_time(&inner.lines_prefix, key).unwrap_or_else(Utc::now),
                (None, None) => return Ok(None),
            };
            let header = Bytes::from(format::header(inner.stage, started));

            let lister = inner.clone();
            let later_pages = stream::try_unfold(next, move |token| {
                let lister = lister.clone();
                async move {
                    match token {
                        Some(token) => {
                            let page = lister.list(None, Some(token)).await?;
                            anyhow::Ok(Some(page))
                        }
                        None => Ok(None),
                    }
                }
            });
            let keys = stream::once(async move { anyhow::Ok(first_keys) })
                .chain(later_pages)
                .map_ok(|keys| stream::iter(keys.into_iter().map(Ok)))
                .try_flatten();
            let lines = keys
                .map(move |key: anyhow::Result<String>| {
                    let inner = inner.clone();
                    async move { inner.get(key?).await }
                })
                .buffered(READ_CONCURRENCY);
            let chunks = stream::once(async move { anyhow::Ok(header) }).chain(lines);
            Ok(Some(chunks.boxed()))
        })
    }

    fn clear(&self, at: DateTime<Utc>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.inner.mark_cleared(at).await?;
            self.inner.delete_before(at).await;
            Ok(())
        })
    }

    fn bucket(&self) -> Option<&str> {
        Some(&self.inner.bucket)
    }
}

/// The key of a line object: its first line's time, then a random id against collisions.
fn line_key(prefix: &str, time: DateTime<Utc>) -> String {
    let id = uuid::Uuid::new_v4().simple();
    format!("{prefix}{}-{id}.txt", time.format(KEY_TIME))
}

/// Every line key of a time at or after `time` sorts after this one, every earlier one before.
fn boundary_key(prefix: &str, time: DateTime<Utc>) -> String {
    format!("{prefix}{}", time.format(KEY_TIME))
}

/// The time a line key starts with.
fn key_time(prefix: &str, key: &str) -> Option<DateTime<Utc>> {
    let name = key.strip_prefix(prefix)?;
    let time = name.get(..KEY_TIME_LEN)?;
    NaiveDateTime::parse_from_str(time, KEY_TIME)
        .ok()
        .map(|t| t.and_utc())
}

/// The error in one line: the service's code and message, or the chain of causes of a failure
/// to get an answer (the SDK's own `Display` leaves the causes out, its `Debug` dumps the response).
fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: HasStatus + std::fmt::Debug,
{
    if let Some(service) = err.as_service_error() {
        let status = status(err)
            .map(|s| format!("HTTP {s} "))
            .unwrap_or_default();
        return format!(
            "{status}{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("(no message)")
        );
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn status<E, R: HasStatus>(err: &SdkError<E, R>) -> Option<u16> {
    err.raw_response().map(HasStatus::status_code)
}

/// A conditional write's condition does not hold (412): the key exists, or its ETag changed.
fn is_precondition_failed<E: ProvideErrorMetadata, R: HasStatus>(err: &SdkError<E, R>) -> bool {
    let code = err.as_service_error().and_then(|e| e.code());
    status(err) == Some(412) || code == Some("PreconditionFailed")
}

/// A simultaneous conditional write to the same key got there first (409).
fn is_conflict<E: ProvideErrorMetadata, R: HasStatus>(err: &SdkError<E, R>) -> bool {
    let code = err.as_service_error().and_then(|e| e.code());
    status(err) == Some(409) || code == Some("ConditionalRequestConflict")
}

/// The key does not exist (but the bucket does: a missing bucket is an error).
fn is_not_found<E: ProvideErrorMetadata, R: HasStatus>(err: &SdkError<E, R>) -> bool {
    let code = err.as_service_error().and_then(|e| e.code());
    code == Some("NoSuchKey") || (status(err) == Some(404) && code != Some("NoSuchBucket"))
}

/// The HTTP status of a raw response.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const PREFIX: &str = "logsdev/predicciones_dev/lines/";

    #[test]
    fn keys_sort_in_time_order_and_carry_their_time() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 4, 9, 5, 7).unwrap();
        let times = [
            t0,
            t0 + chrono::Duration::microseconds(1),
            t0 + chrono::Duration::milliseconds(999),
            t0 + chrono::Duration::hours(15),
            t0 + chrono::Duration::days(40),
        ];
        let keys: Vec<String> = times.iter().map(|t| line_key(PREFIX, *t)).collect();
        assert!(keys.is_sorted(), "{keys:?}");
        assert!(keys[0].starts_with("logsdev/predicciones_dev/lines/20261204T090507.000000Z-"));
        for (key, time) in keys.iter().zip(times) {
            assert_eq!(key_time(PREFIX, key), Some(time));
        }
        assert_ne!(line_key(PREFIX, t0), line_key(PREFIX, t0));
        assert_eq!(
            key_time(PREFIX, "logsdev/predicciones_dev/lines/junk"),
            None
        );
        assert_eq!(key_time("other/", &keys[0]), None);
    }

    #[test]
    fn the_boundary_splits_keys_at_a_time() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let boundary = boundary_key(PREFIX, t);
        assert!(line_key(PREFIX, t - chrono::Duration::microseconds(1)) < boundary);
        assert!(line_key(PREFIX, t) > boundary);
        assert!(line_key(PREFIX, t + chrono::Duration::microseconds(1)) > boundary);
    }
}
