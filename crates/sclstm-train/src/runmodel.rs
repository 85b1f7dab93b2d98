//! A trained run loaded back for evaluation and tagging: config, vocabularies, model.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sclstm_core::Backend;
use sclstm_data::batch::EncodedSentence;
use sclstm_data::caps::CapFeature;
use sclstm_data::vocab::{CharVocab, WordVocab};
use sclstm_model::Tagger;

use crate::config::TrainConfig;
use crate::pool::host_pool;
use crate::rundir::{self, RunFiles, RunVocab};

/// A run directory's model with everything needed to read new text.
pub struct RunModel<B: Backend> {
    /// Its training configuration.
    pub config: TrainConfig,
    /// Its vocabularies.
    pub vocab: RunVocab,
    /// Word vocabulary rebuilt from `vocab`.
    pub words: WordVocab,
    /// Character vocabulary rebuilt from `vocab`.
    pub chars: CharVocab,
    /// The model.
    pub tagger: Tagger<B>,
}

impl<B: Backend + 'static> RunModel<B> {
    /// Loads `checkpoint` (`best` or `last`) of the run in `dir`; its host products run
    /// on `threads` threads (0 = one per core). A directory whose `config.toml`,
    /// `vocab.json` and checkpoint come from different runs is refused
    /// ([`rundir::RunDirError::Mixed`], naming the files).
    pub fn load(
        dir: &Path,
        checkpoint: &str,
        backend: Arc<B>,
        threads: usize,
    ) -> anyhow::Result<Self> {
        let config = TrainConfig::from_toml_file(&dir.join(rundir::CONFIG_FILE))
            .with_context(|| format!("{} is not a run directory", dir.display()))?;
        let vocab = RunVocab::load(dir)?;
        let file = match checkpoint {
            "best" => rundir::BEST_FILE,
            "last" => rundir::LAST_FILE,
            other => anyhow::bail!("unknown checkpoint `{other}` (expected best or last)"),
        };
        let path = dir.join(file);
        let metadata = sclstm_model::read_metadata(&path)?;
        RunFiles::check(dir, file, &metadata)?;
        let (mut tagger, _) = Tagger::from_checkpoint(&path, backend)?;
        tagger.set_thread_pool(host_pool(threads)?);
        for (k, t) in vocab.tasks.iter().enumerate() {
            tagger.check_tags(k, &t.tags)?;
        }
        Ok(RunModel {
            words: vocab.word_vocab(),
            chars: vocab.char_vocab(),
            config,
            vocab,
            tagger,
        })
    }

    /// Index of a task by name.
    pub fn task_index(&self, name: &str) -> anyhow::Result<usize> {
        Ok(self.tagger.config().task_index(name)?)
    }

    /// Encodes words (tags left 0) with the run's vocabularies.
    pub fn encode_words(&self, words: &[String]) -> EncodedSentence {
        EncodedSentence {
            words: words.iter().map(|w| self.words.id(w)).collect(),
            caps: words.iter().map(|w| CapFeature::of(w).id()).collect(),
            chars: words
                .iter()
                .map(|w| w.chars().map(|c| self.chars.id(c)).collect())
                .collect(),
            tags: vec![0; words.len()],
        }
    }
}
