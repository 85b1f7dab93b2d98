//! Scoring predictions the way the paper does: conlleval chunk F1 for NER and chunking,
//! token accuracy for POS.

use sclstm_data::conlleval::{Accuracy, score_chunks};
use sclstm_data::scheme::TagScheme;
use sclstm_data::shipped::Metric;
use sclstm_data::vocab::TagVocab;
use serde::Serialize;

use super::data::{PreparedSplit, PreparedTask};

/// What scoring a task needs: its name, metric, chunk scheme and tag set.
#[derive(Debug, Clone, Copy)]
pub struct Scorer<'a> {
    /// Task name.
    pub name: &'a str,
    /// How it is scored.
    pub metric: Metric,
    /// Chunk scheme of its tags (`None`: plain labels such as POS).
    pub scheme: Option<TagScheme>,
    /// Its tag set (predicted ids are names in it).
    pub tags: &'a TagVocab,
}

impl PreparedTask {
    /// The scorer of this task.
    pub fn scorer(&self) -> Scorer<'_> {
        Scorer {
            name: &self.name,
            metric: self.metric,
            scheme: self.scheme,
            tags: &self.tags,
        }
    }
}

/// The score of one task on one split.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskScore {
    /// Task name.
    pub task: String,
    /// `f1` or `accuracy`.
    pub metric: &'static str,
    /// The headline number (%), F1 or accuracy.
    pub score: f64,
    /// Precision (%), chunk tasks only.
    pub precision: Option<f64>,
    /// Recall (%), chunk tasks only.
    pub recall: Option<f64>,
    /// Token accuracy (%).
    pub accuracy: f64,
    /// The full conlleval report (chunk tasks) or a one-line accuracy report.
    #[serde(skip)]
    pub report: String,
}

/// Tag names of predicted ids.
pub fn tag_names(task: &Scorer<'_>, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| task.tags.tag(i).to_string()).collect()
}

/// Scores `pred` (tag ids per sentence, in split order) against the split's gold tags.
pub fn score(
    task: &Scorer<'_>,
    split: &PreparedSplit,
    pred: &[Vec<u32>],
) -> anyhow::Result<TaskScore> {
    let gold: Vec<&Vec<String>> = split.sentences.iter().map(|s| &s.tags).collect();
    let pred: Vec<Vec<String>> = pred.iter().map(|p| tag_names(task, p)).collect();
    let mut acc = Accuracy::default();
    for (i, (g, p)) in gold.iter().zip(&pred).enumerate() {
        acc.add_sentence(i, g, p)?;
    }
    match task.metric {
        Metric::ChunkF1 => {
            let gold: Vec<Vec<String>> = gold.into_iter().cloned().collect();
            let eval = score_chunks(task.scheme.unwrap_or(TagScheme::Iob2), &gold, &pred)?;
            let prf = eval.overall();
            Ok(TaskScore {
                task: task.name.to_string(),
                metric: "f1",
                score: prf.f1,
                precision: Some(prf.precision),
                recall: Some(prf.recall),
                accuracy: acc.percent(),
                report: eval.report(),
            })
        }
        Metric::Accuracy => Ok(TaskScore {
            task: task.name.to_string(),
            metric: "accuracy",
            score: acc.percent(),
            precision: None,
            recall: None,
            accuracy: acc.percent(),
            report: format!(
                "processed {} tokens; correct: {}; accuracy: {:6.2}%\n",
                acc.total,
                acc.correct,
                acc.percent()
            ),
        }),
    }
}
