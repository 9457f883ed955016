//! The log's text format, in one place: the header, the line of one prediction, and the parser
//! the statistics read it back with.
//!
//! A line is `timestamp|filename|top_prediction|confidence|processing_time|all_predictions`,
//! byte for byte what the original Python service wrote: timestamps in RFC 3339 UTC with
//! microseconds, confidence and processing time with four decimals, and the last field as
//! Python's `json.dumps` writes it (`": "` and `", "` separators, non-ASCII as `\uXXXX`, scores as
//! `repr(round(p, 4))`). Two things keep one prediction on exactly one line of six fields,
//! whatever the client sends: text fields have `|`, control characters and Unicode line
//! separators replaced by `_` and are cut to [`MAX_FIELD_CHARS`] characters, and `|` inside the
//! JSON field is written as the escape `\u007c` (valid JSON that reads back as the same label).

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::LogEntry;
use crate::config::Stage;

/// The second header line, naming the six fields.
pub const FORMAT_LINE: &str =
    "# Formato: timestamp|filename|top_prediction|confidence|processing_time|all_predictions";

/// The longest filename or label kept in a line, in characters; longer text is cut.
pub const MAX_FIELD_CHARS: usize = 255;

/// What a missing or empty filename is logged as.
pub const UNKNOWN_FILENAME: &str = "unknown";

/// The logical name of the stage's log, `logs{S}/predicciones_{S}.txt`.
pub fn file_key(stage: Stage) -> String {
    let s = stage.as_str();
    format!("logs{s}/predicciones_{s}.txt")
}

/// The header that starts a log begun (or cleared) at `started`, with its closing empty line.
pub fn header(stage: Stage, started: DateTime<Utc>) -> String {
    format!(
        "# Predicciones para {} - Iniciado el {}\n{FORMAT_LINE}\n\n",
        stage.as_str().to_uppercase(),
        timestamp(started)
    )
}

/// A time as the log writes it: `2026-12-04T15:34:20.000001+00:00`.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// The line of one prediction, ending with `\n`.
pub fn line(entry: &LogEntry) -> String {
    let top = entry.predictions.first();
    let filename = entry
        .filename
        .as_deref()
        .map(field)
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| UNKNOWN_FILENAME.to_owned());
    let mut out = String::with_capacity(160 + 40 * entry.predictions.len());
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{}|{}|{}|{:.4}|{:.4}|{{\"predictions\": [",
        timestamp(entry.timestamp),
        filename,
        top.map(|p| field(&p.label)).unwrap_or_default(),
        top.map_or(0.0, |p| p.probability),
        entry.processing_time_s,
    );
    for (i, p) in entry.predictions.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_string(&mut out, &p.label);
    }
    out.push_str("], \"confidence_scores\": [");
    for (i, p) in entry.predictions.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&python_float(round4(p.probability)));
    }
    out.push_str("]}\n");
    out
}

/// `text` made safe for one field: `|`, control characters (CR, LF, NEL and the rest) and the
/// Unicode line and paragraph separators become `_`; at most [`MAX_FIELD_CHARS`] characters.
pub fn field(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '|' || c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                '_'
            } else {
                c
            }
        })
        .take(MAX_FIELD_CHARS)
        .collect()
}

/// Writes `text` as a JSON string the way Python's `json.dumps` does (`ensure_ascii`), and
/// escapes `|` too so the JSON field never holds a field separator.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' if c != '|' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// `x` rounded to four decimals, as exact decimal rounding does (`format!("{:.4}")`).
fn round4(x: f64) -> f64 {
    format!("{x:.4}").parse().unwrap_or(x)
}

/// Python's `repr` of a float: the shortest text that reads back as `x`, always with a `.`.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let text = x.to_string();
    if text.contains('.') {
        text
    } else {
        text + ".0"
    }
}

/// One prediction line read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine<'a> {
    /// The timestamp, as written.
    pub timestamp: &'a str,
    /// The filename field.
    pub filename: &'a str,
    /// The most probable class.
    pub top_prediction: &'a str,
    /// Its probability.
    pub confidence: f64,
    /// Decode + pre-process + inference, in seconds.
    pub processing_time: f64,
    /// The JSON of the top-k labels and scores, as written.
    pub all_predictions: &'a str,
}

/// Parses a prediction line (without its `\n`); `None` for header, empty and malformed lines.
/// The sixth field takes the rest of the line, so lines of older writers that left a `|` inside
/// the JSON still count.
pub fn parse_line(line: &str) -> Option<ParsedLine<'_>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.starts_with('#') {
        return None;
    }
    let mut fields = line.splitn(6, '|');
    let timestamp = fields.next()?;
    DateTime::parse_from_rfc3339(timestamp).ok()?;
    let filename = fields.next()?;
    let top_prediction = fields.next()?;
    let confidence = fields.next()?.trim().parse().ok()?;
    let processing_time = fields.next()?.trim().parse().ok()?;
    let all_predictions = fields.next()?;
    Some(ParsedLine {
        timestamp,
        filename,
        top_prediction,
        confidence,
        processing_time,
        all_predictions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::Prediction;
    use chrono::TimeZone;

    fn prediction(rank: usize, label: &str, probability: f64) -> Prediction {
        Prediction {
            rank,
            class_id: rank,
            label: label.to_owned(),
            probability,
            confidence: format!("{:.2}%", probability * 100.0),
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 15, 34, 20).unwrap() + chrono::Duration::microseconds(1)
    }

    fn entry(filename: Option<&str>, predictions: Vec<Prediction>) -> LogEntry {
        LogEntry {
            timestamp: at(),
            filename: filename.map(str::to_owned),
            predictions,
            processing_time_s: 0.041_7,
        }
    }

    #[test]
    fn header_matches_the_original() {
        assert_eq!(
            header(Stage::Dev, at()),
            "# Predicciones para DEV - Iniciado el 2026-12-04T15:34:20.000001+00:00\n\
             # Formato: timestamp|filename|top_prediction|confidence|processing_time|all_predictions\n\n"
        );
        assert!(header(Stage::Prod, at()).starts_with("# Predicciones para PROD - "));
        assert_eq!(file_key(Stage::Prod), "logsprod/predicciones_prod.txt");
    }

    #[test]
    fn line_matches_python_byte_for_byte() {
        let e = entry(
            Some("dog.jpg"),
            vec![
                prediction(1, "Samoyed", 0.854_21),
                prediction(2, "Pomeranian", 0.071_1),
                prediction(3, "white wolf", 0.07),
                prediction(4, "Arctic fox", 0.000_01),
                prediction(5, "wolf", 1.0),
            ],
        );
        assert_eq!(
            line(&e),
            "2026-12-04T15:34:20.000001+00:00|dog.jpg|Samoyed|0.8542|0.0417|{\"predictions\": \
             [\"Samoyed\", \"Pomeranian\", \"white wolf\", \"Arctic fox\", \"wolf\"], \
             \"confidence_scores\": [0.8542, 0.0711, 0.07, 0.0, 1.0]}\n"
        );
    }

    #[test]
    fn json_labels_are_escaped_like_python_ensure_ascii() {
        let e = entry(None, vec![prediction(1, "a\"b\\c\nd|é😀\u{7f}", 0.5)]);
        let text = line(&e);
        assert!(
            text.ends_with(
                "|{\"predictions\": [\"a\\\"b\\\\c\\nd\\u007c\\u00e9\\ud83d\\ude00\\u007f\"], \
                 \"confidence_scores\": [0.5]}\n"
            ),
            "{text}"
        );
        let json = text.trim_end().splitn(6, '|').nth(5).unwrap();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["predictions"][0], "a\"b\\c\nd|é😀\u{7f}");
        assert_eq!(text.split('|').count(), 6);
        assert_eq!(text.split('|').nth(1), Some("unknown"));
        assert_eq!(text.split('|').nth(2), Some("a\"b\\c_d_é😀_"));
    }

    #[test]
    fn hostile_filenames_stay_in_one_field() {
        let long = "x".repeat(10_000);
        for name in [
            "a|b|c",
            "line\nbreak\r\n",
            "tab\tbell\u{7}nul\0esc\u{1b}",
            "nel\u{85}ls\u{2028}ps\u{2029}",
            long.as_str(),
            "",
        ] {
            let text = line(&entry(Some(name), vec![prediction(1, "cat", 0.9)]));
            assert_eq!(text.matches('\n').count(), 1, "{name:?}");
            assert!(text.ends_with('\n'));
            let parsed = parse_line(text.trim_end_matches('\n')).expect("parses");
            assert!(parsed.filename.chars().count() <= MAX_FIELD_CHARS);
            assert!(!parsed.filename.chars().any(char::is_control));
            assert_eq!(text.split('|').count(), 6, "{name:?}");
        }
        assert_eq!(field("a|b\nc"), "a_b_c");
        assert_eq!(field(&long).len(), MAX_FIELD_CHARS);
        assert_eq!(field(&"é".repeat(300)).chars().count(), MAX_FIELD_CHARS);
    }

    #[test]
    fn parse_reads_what_line_writes() {
        let text = line(&entry(
            Some("cat.png"),
            vec![prediction(1, "tabby", 0.123_45)],
        ));
        let parsed = parse_line(text.trim_end()).unwrap();
        assert_eq!(parsed.timestamp, "2026-12-04T15:34:20.000001+00:00");
        assert_eq!(parsed.filename, "cat.png");
        assert_eq!(parsed.top_prediction, "tabby");
        assert_eq!(parsed.confidence, 0.1235);
        assert_eq!(parsed.processing_time, 0.0417);
        assert!(parsed.all_predictions.starts_with("{\"predictions\""));
    }

    #[test]
    fn parse_skips_headers_and_malformed_lines() {
        assert_eq!(parse_line(FORMAT_LINE), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("not|a|line"), None);
        assert_eq!(parse_line("yesterday|a|b|0.5|0.1|{}"), None);
        assert_eq!(
            parse_line("2026-12-04T15:34:20+00:00|a|b|high|0.1|{}"),
            None
        );
        let old = parse_line("2026-12-04T15:34:20+00:00|a|b|0.5|0.1|{\"p\": \"x|y\"}").unwrap();
        assert_eq!(old.all_predictions, "{\"p\": \"x|y\"}");
    }

    #[test]
    fn floats_print_like_python_repr() {
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.07), "0.07");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(round4(0.99995)), "1.0");
        assert_eq!(python_float(round4(0.123_449_9)), "0.1234");
    }
}
