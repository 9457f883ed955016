//! Model-agnostic post-processing: raw scores to probabilities to the top-k classes.

use serde::Serialize;

use crate::labels::Labels;

/// One ranked class of a prediction.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Prediction {
    /// 1 for the most probable class.
    pub rank: usize,
    /// The class index in the model's output.
    pub class_id: usize,
    /// The class name.
    pub label: String,
    /// The softmax probability, 0..=1.
    pub probability: f64,
    /// The probability as a percentage with two decimals, e.g. `85.42%`.
    pub confidence: String,
}

/// A numerically stable softmax (max subtracted, accumulated in f64).
pub fn softmax(scores: &[f32]) -> Vec<f64> {
    let max = scores
        .iter()
        .copied()
        .map(f64::from)
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|&s| (f64::from(s) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, most probable first; ties keep the lower class id first.
pub fn top_k(probabilities: &[f64], k: usize, labels: &Labels) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    let by_probability = |a: &usize, b: &usize| {
        probabilities[*b]
            .total_cmp(&probabilities[*a])
            .then(a.cmp(b))
    };
    let k = k.min(order.len());
    if k < order.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, by_probability);
    }
    order.truncate(k);
    order.sort_by(by_probability);
    order
        .into_iter()
        .enumerate()
        .map(|(i, class_id)| {
            let probability = probabilities[class_id];
            Prediction {
                rank: i + 1,
                class_id,
                label: labels.name(class_id).into_owned(),
                probability,
                confidence: format!("{:.2}%", probability * 100.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_scores() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12);
        assert!((p[1] - 0.5).abs() < 1e-12);
        assert!(p[2] < 1e-300);
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((p[2] - 0.665_240_955_774_821_5).abs() < 1e-12);
    }

    #[test]
    fn top_k_orders_by_probability_with_labels() {
        let labels = Labels::parse("a\nb\nc\nd\n");
        let top = top_k(&[0.1, 0.4, 0.2, 0.3], 3, &labels);
        let ids: Vec<usize> = top.iter().map(|p| p.class_id).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert_eq!(top[0].rank, 1);
        assert_eq!(top[0].label, "b");
        assert_eq!(top[0].confidence, "40.00%");
        assert_eq!(top[2].rank, 3);
    }

    #[test]
    fn top_k_is_stable_on_ties_and_nan_does_not_panic() {
        let labels = Labels::parse("a\nb\nc\n");
        let ids: Vec<usize> = top_k(&[0.25, 0.5, 0.25], 3, &labels)
            .iter()
            .map(|p| p.class_id)
            .collect();
        assert_eq!(ids, [1, 0, 2]);
        let top = top_k(&[f64::NAN, 0.5, 0.1], 2, &labels);
        assert_eq!(top.len(), 2);
        assert_eq!(top_k(&[0.5, 0.5], 10, &labels).len(), 2);
    }
}
