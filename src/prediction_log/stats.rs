//! One pass over the log text, chunk by chunk: the statistics of every prediction line and the
//! last N lines for the log view, in memory bounded by N (plus one number per prediction for the
//! percentiles), never the whole log.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::format;

/// The statistics of `GET /logs/predictions/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogStats {
    /// Prediction lines in the log.
    pub total_predictions: u64,
    /// Whether the log exists (it is created by the first prediction or a clear).
    pub file_exists: bool,
    /// The size of the log text, header included, in bytes.
    pub file_size_bytes: u64,
    /// The last prediction line, or `None` for a log without predictions.
    pub last_prediction: Option<LastPrediction>,
    /// The stage whose log this is.
    pub stage: String,
    /// The S3 bucket, or `None` for a local directory.
    pub bucket: Option<String>,
    /// The log's logical name, `logs{S}/predicciones_{S}.txt`.
    pub file_key: String,
    /// The mean confidence of the top predictions, four decimals.
    pub avg_confidence: Option<f64>,
    /// The mean processing time in seconds, four decimals.
    pub avg_processing_time: Option<f64>,
    /// The median processing time (nearest rank), seconds.
    pub p50_processing_time: Option<f64>,
    /// The 95th percentile of the processing time (nearest rank), seconds.
    pub p95_processing_time: Option<f64>,
    /// The [`TOP_CLASSES`] most frequent top predictions and their counts, most frequent first.
    pub top_classes: TopClasses,
    /// Prediction lines this process failed to store (write errors, timeouts, a full queue)
    /// since it started; a timed-out line may still have been stored.
    pub log_write_failures: u64,
}

/// How many classes `top_classes` lists.
pub const TOP_CLASSES: usize = 10;

/// Labels and counts, serialized as a JSON object in this order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopClasses(pub Vec<(String, u64)>);

impl Serialize for TopClasses {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(label, count)| (label, count)))
    }
}

impl<'de> Deserialize<'de> for TopClasses {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = HashMap::<String, u64>::deserialize(deserializer)?;
        let mut classes: Vec<(String, u64)> = map.into_iter().collect();
        classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(TopClasses(classes))
    }
}

/// The last prediction of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastPrediction {
    /// Its timestamp, as written.
    pub timestamp: String,
    /// Its filename field.
    pub filename: String,
    /// Its most probable class.
    pub top_prediction: String,
    /// That class's probability.
    pub confidence: f64,
}

/// What the scan does not learn from the text itself.
#[derive(Debug, Clone)]
pub struct LogMeta {
    /// The stage's name.
    pub stage: String,
    /// The bucket, for S3 stores.
    pub bucket: Option<String>,
    /// The logical file name.
    pub file_key: String,
    /// Whether the store holds the log at all.
    pub exists: bool,
    /// The process's write-failure count.
    pub write_failures: u64,
}

/// Accumulates the statistics (and optionally the tail) of a log fed in chunks.
#[derive(Debug, Default)]
pub struct Scanner {
    partial: Vec<u8>,
    bytes: u64,
    in_header: bool,
    header: String,
    tail: VecDeque<String>,
    tail_limit: usize,
    total: u64,
    confidence_sum: f64,
    times: Vec<f64>,
    classes: HashMap<String, u64>,
    last: Option<LastPrediction>,
}

impl Scanner {
    /// A scanner keeping the header and the last `tail_limit` lines (0 keeps none).
    pub fn new(tail_limit: usize) -> Self {
        Scanner {
            in_header: true,
            tail_limit,
            ..Scanner::default()
        }
    }

    /// Feeds the next chunk of the log text.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            if self.partial.is_empty() {
                self.line(head);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line);
            }
            rest = &tail[1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn line(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let trimmed = text.strip_suffix('\r').unwrap_or(&text);
        if self.in_header && (trimmed.is_empty() || trimmed.starts_with('#')) {
            if self.tail_limit > 0 {
                self.header.push_str(&text);
                self.header.push('\n');
            }
            return;
        }
        self.in_header = false;
        if trimmed.is_empty() {
            return;
        }
        if let Some(p) = format::parse_line(trimmed) {
            self.total += 1;
            self.confidence_sum += p.confidence;
            self.times.push(p.processing_time);
            *self.classes.entry(p.top_prediction.to_owned()).or_default() += 1;
            self.last = Some(LastPrediction {
                timestamp: p.timestamp.to_owned(),
                filename: p.filename.to_owned(),
                top_prediction: p.top_prediction.to_owned(),
                confidence: p.confidence,
            });
        }
        if self.tail_limit > 0 {
            if self.tail.len() == self.tail_limit {
                self.tail.pop_front();
            }
            self.tail.push_back(text.into_owned());
        }
    }

    /// Ends the scan: the statistics, and the header followed by the last lines kept.
    pub fn finish(mut self, meta: LogMeta) -> (LogStats, String) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        let n = self.total as f64;
        let mean = |sum: f64| (self.total > 0).then(|| round4(sum / n));
        let avg_confidence = mean(self.confidence_sum);
        let avg_processing_time = mean(self.times.iter().sum());
        self.times.sort_by(f64::total_cmp);
        let mut classes: Vec<(String, u64)> = self.classes.into_iter().collect();
        classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        classes.truncate(TOP_CLASSES);
        let stats = LogStats {
            total_predictions: self.total,
            file_exists: meta.exists,
            file_size_bytes: self.bytes,
            last_prediction: self.last,
            stage: meta.stage,
            bucket: meta.bucket,
            file_key: meta.file_key,
            avg_confidence,
            avg_processing_time,
            p50_processing_time: percentile(&self.times, 50.0),
            p95_processing_time: percentile(&self.times, 95.0),
            top_classes: TopClasses(classes),
            log_write_failures: meta.write_failures,
        };
        let mut content = self.header;
        for line in self.tail {
            content.push_str(&line);
            content.push('\n');
        }
        (stats, content)
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p`% of the
/// values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> LogMeta {
        LogMeta {
            stage: "dev".into(),
            bucket: None,
            file_key: "logsdev/predicciones_dev.txt".into(),
            exists: true,
            write_failures: 0,
        }
    }

    const LOG: &str = "# Predicciones para DEV - Iniciado el 2026-01-01T00:00:00.000000+00:00\n\
        # Formato: timestamp|filename|top_prediction|confidence|processing_time|all_predictions\n\
        \n\
        2026-01-01T00:00:01.000000+00:00|a.jpg|cat|0.5000|0.1000|{}\n\
        2026-01-01T00:00:02.000000+00:00|b.jpg|dog|0.7000|0.3000|{}\n\
        garbage line\n\
        2026-01-01T00:00:03.000000+00:00|c.jpg|cat|0.9000|0.2000|{}\n";

    #[test]
    fn stats_in_one_pass_whatever_the_chunking() {
        for chunk in [1, 7, 64, LOG.len()] {
            let mut scanner = Scanner::new(2);
            for piece in LOG.as_bytes().chunks(chunk) {
                scanner.feed(piece);
            }
            let (stats, content) = scanner.finish(meta());
            assert_eq!(stats.total_predictions, 3);
            assert_eq!(stats.file_size_bytes, LOG.len() as u64);
            assert_eq!(stats.avg_confidence, Some(0.7));
            assert_eq!(stats.avg_processing_time, Some(0.2));
            assert_eq!(stats.p50_processing_time, Some(0.2));
            assert_eq!(stats.p95_processing_time, Some(0.3));
            assert_eq!(
                stats.top_classes,
                TopClasses(vec![("cat".into(), 2), ("dog".into(), 1)])
            );
            let last = stats.last_prediction.unwrap();
            assert_eq!(last.filename, "c.jpg");
            assert_eq!(last.confidence, 0.9);
            let lines: Vec<&str> = content.lines().collect();
            assert_eq!(lines.len(), 5, "{content}");
            assert_eq!(lines[2], "");
            assert_eq!(lines[3], "garbage line");
            assert!(lines[4].starts_with("2026-01-01T00:00:03"));
        }
    }

    #[test]
    fn a_large_tail_reproduces_the_log() {
        let mut scanner = Scanner::new(100);
        scanner.feed(LOG.as_bytes());
        assert_eq!(scanner.finish(meta()).1, LOG);
    }

    #[test]
    fn an_empty_log_has_no_averages() {
        let (stats, content) = Scanner::new(10).finish(LogMeta {
            exists: false,
            ..meta()
        });
        assert_eq!(stats.total_predictions, 0);
        assert_eq!(stats.avg_confidence, None);
        assert_eq!(stats.p95_processing_time, None);
        assert_eq!(stats.last_prediction, None);
        assert_eq!(content, "");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(10.0));
        assert_eq!(percentile(&values, 95.0), Some(19.0));
        assert_eq!(percentile(&values, 100.0), Some(20.0));
        assert_eq!(percentile(&[4.0], 95.0), Some(4.0));
    }

    #[test]
    fn top_classes_serialize_as_an_object_most_frequent_first() {
        let classes = TopClasses(vec![("b".into(), 3), ("a".into(), 1)]);
        assert_eq!(serde_json::to_string(&classes).unwrap(), r#"{"b":3,"a":1}"#);
    }
}
