//! Class labels: the ImageNet-1k names shipped with the crate, or a file named by `LABELS_PATH`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

/// The 1000 ImageNet-1k class names, index-aligned with the model's output.
const IMAGENET_CLASSES: &str = include_str!("imagenet_classes.txt");

/// Class names indexed by class id.
#[derive(Debug, Clone)]
pub struct Labels(Arc<[String]>);

impl Labels {
    /// The built-in ImageNet-1k labels.
    pub fn imagenet() -> Labels {
        Labels::parse(IMAGENET_CLASSES)
    }

    /// Reads labels from a text file, one per line.
    pub fn from_file(path: &Path) -> anyhow::Result<Labels> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading labels from {}", path.display()))?;
        let labels = Labels::parse(&text);
        if labels.is_empty() {
            bail!("the labels file {} holds no labels", path.display());
        }
        Ok(labels)
    }

    /// Parses one label per line; a trailing empty line is ignored.
    pub fn parse(text: &str) -> Labels {
        Labels(
            text.lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
        )
    }

    /// The label of class `id`, or `class_{id}` for an id past the list.
    pub fn name(&self, id: usize) -> std::borrow::Cow<'_, str> {
        match self.0.get(id) {
            Some(name) => name.as_str().into(),
            None => format!("class_{id}").into(),
        }
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Fails unless there is exactly one label per model output.
    pub fn check_matches(&self, num_classes: usize) -> anyhow::Result<()> {
        if self.len() != num_classes {
            bail!(
                "the model has {num_classes} outputs but there are {} labels: set LABELS_PATH to a \
                 file with one label per output",
                self.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_labels_are_index_aligned() {
        let labels = Labels::imagenet();
        assert_eq!(labels.len(), 1000);
        // The "simple labels" naming capitalises breeds (`Golden Retriever`); compare without case.
        let expected = [
            (0, "tench"),
            (207, "golden retriever"),
            (258, "Samoyed"),
            (281, "tabby cat"),
            (954, "banana"),
        ];
        for (id, name) in expected {
            assert!(
                labels.name(id).eq_ignore_ascii_case(name),
                "{id}: {}",
                labels.name(id)
            );
        }
        let unique: std::collections::HashSet<_> = (0..1000).map(|i| labels.name(i)).collect();
        assert_eq!(unique.len(), 1000, "labels must be distinct");
        assert_eq!(labels.name(1000), "class_1000");
    }

    #[test]
    fn count_mismatch_is_an_error_naming_labels_path() {
        let err = Labels::parse("a\nb\n")
            .check_matches(1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("LABELS_PATH"), "{err}");
        assert!(Labels::parse("a\nb\n").check_matches(2).is_ok());
    }

    #[test]
    fn labels_file_is_read_and_empty_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.txt");
        std::fs::write(&path, "cat\r\ndog\n\n").unwrap();
        let labels = Labels::from_file(&path).unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels.name(0), "cat");
        std::fs::write(&path, "\n").unwrap();
        assert!(Labels::from_file(&path).is_err());
        assert!(Labels::from_file(&dir.path().join("missing.txt")).is_err());
    }
}
