//! Classifier-based measures of generated samples: the class histogram (mode coverage over
//! the data's classes), its KL divergence to the data's class frequencies (as VEEGAN and
//! PacGAN report on stacked MNIST), the "Inception score" formula computed with this project's
//! classifier, and the accuracy of conditional samples on the class asked for.

use crate::error::{Error, Result};

/// A class counts as covered when it receives at least this fraction of its fair share
/// (`1 / num_classes`) of the samples: 2% of the samples for 10 classes.
pub const COVERED_SHARE_OF_UNIFORM: f64 = 0.2;

/// What the classifier says about a set of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassStats {
    /// Samples predicted as each class (argmax of the classifier's probabilities).
    pub histogram: Vec<usize>,
    /// The same as fractions of the samples.
    pub fractions: Vec<f64>,
    /// Classes with at least [`COVERED_SHARE_OF_UNIFORM`] / K of the samples.
    pub covered: usize,
    /// `KL(generated || reference)` of the predicted class frequencies, in nats, when a
    /// reference distribution is given (classes the samples never hit contribute 0; a class
    /// the reference lacks but the samples hit makes it infinite).
    pub kl_to_reference: Option<f64>,
    /// `exp(E_x KL(p(y|x) || p(y)))`, the Inception-score formula on this classifier: between
    /// 1 (every sample the same uncertain prediction) and K (confident and balanced).
    pub score: f64,
    /// Mean probability of the predicted class (how confident the classifier is).
    pub mean_confidence: f64,
}

/// The predicted class of each row of `probs` (`n x k`, row-major).
pub fn predictions(probs: &[f32], k: usize) -> Vec<usize> {
    probs
        .chunks_exact(k.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}

/// Class frequencies of `labels` over `k` classes (fractions summing to 1).
pub fn frequencies(labels: &[usize], k: usize) -> Vec<f64> {
    let mut h = vec![0.0; k];
    for &l in labels {
        if l < k {
            h[l] += 1.0;
        }
    }
    let n = labels.len().max(1) as f64;
    h.iter().map(|c| c / n).collect()
}

/// Class statistics of samples whose classifier probabilities are `probs` (`n x k`, rows
/// summing to 1), optionally against `reference` class frequencies (e.g. the training data's).
pub fn class_stats(probs: &[f32], k: usize, reference: Option<&[f64]>) -> Result<ClassStats> {
    if k == 0 || !probs.len().is_multiple_of(k) || probs.is_empty() {
        return Err(Error::invalid(
            "class_stats",
            format!(
                "{} probabilities do not make rows of {k} classes",
                probs.len()
            ),
        ));
    }
    let n = probs.len() / k;
    let pred = predictions(probs, k);
    let mut histogram = vec![0usize; k];
    for &p in &pred {
        histogram[p] += 1;
    }
    let fractions: Vec<f64> = histogram.iter().map(|&c| c as f64 / n as f64).collect();
    let covered = fractions
        .iter()
        .filter(|&&f| f >= COVERED_SHARE_OF_UNIFORM / k as f64)
        .count();
    let kl_to_reference = reference.map(|r| {
        fractions
            .iter()
            .zip(r)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| {
                if *q > 0.0 {
                    p * (p / q).ln()
                } else {
                    f64::INFINITY
                }
            })
            .sum()
    });
    // Inception-score formula: p(y) = mean of rows; IS = exp(mean_x sum_y p(y|x) log(p(y|x)/p(y))).
    let mut marginal = vec![0.0f64; k];
    for row in probs.chunks_exact(k) {
        for (m, &p) in marginal.iter_mut().zip(row) {
            *m += p as f64;
        }
    }
    for m in &mut marginal {
        *m /= n as f64;
    }
    let mut kl_sum = 0.0;
    let mut conf = 0.0;
    for (row, &p) in probs.chunks_exact(k).zip(&pred) {
        conf += row[p] as f64;
        for (&pyx, &py) in row.iter().zip(&marginal) {
            let pyx = pyx as f64;
            if pyx > 0.0 && py > 0.0 {
                kl_sum += pyx * (pyx / py).ln();
            }
        }
    }
    Ok(ClassStats {
        histogram,
        fractions,
        covered,
        kl_to_reference,
        score: (kl_sum / n as f64).exp(),
        mean_confidence: conf / n as f64,
    })
}

/// The fraction of samples classified as the class they were generated for.
pub fn conditional_accuracy(predicted: &[usize], asked: &[usize]) -> Result<f64> {
    if predicted.len() != asked.len() || predicted.is_empty() {
        return Err(Error::invalid(
            "conditional_accuracy",
            format!(
                "{} predictions for {} requested classes",
                predicted.len(),
                asked.len()
            ),
        ));
    }
    let hits = predicted.iter().zip(asked).filter(|(p, a)| p == a).count();
    Ok(hits as f64 / predicted.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapsed_and_balanced_samples() {
        // 4 confident samples, one per class of 4: score 4, all covered, KL 0 vs uniform.
        let mut probs = vec![0.0f32; 16];
        for i in 0..4 {
            probs[i * 4 + i] = 1.0;
        }
        let s = class_stats(&probs, 4, Some(&[0.25; 4])).unwrap();
        assert_eq!(s.covered, 4);
        assert!((s.score - 4.0).abs() < 1e-12);
        assert!(s.kl_to_reference.unwrap().abs() < 1e-12);
        // All in class 2: one class covered, score 1, KL ln 4.
        let mut probs = vec![0.0f32; 16];
        for i in 0..4 {
            probs[i * 4 + 2] = 1.0;
        }
        let s = class_stats(&probs, 4, Some(&[0.25; 4])).unwrap();
        assert_eq!((s.covered, s.histogram.clone()), (1, vec![0, 0, 4, 0]));
        assert!((s.score - 1.0).abs() < 1e-12);
        assert!((s.kl_to_reference.unwrap() - 4f64.ln()).abs() < 1e-12);
        assert_eq!(
            conditional_accuracy(&[1, 2, 3], &[1, 2, 0]).unwrap(),
            2.0 / 3.0
        );
    }
}
