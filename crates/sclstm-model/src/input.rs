//! The borrowed batch view the model reads.

use crate::ModelError;

/// Number of capitalization classes (one-hot, appended to the word embedding).
pub const NUM_CAPS: usize = 8;

/// A batch of `B` sentences padded to `T` steps, time-major: position `t·B + b` is step
/// `t` of sentence `b`. Sentence `b` occupies steps `0..lens[b]`; the rest is padding and
/// is never read by the loss or the decoders.
#[derive(Debug, Clone, Copy)]
pub struct ModelInput<'a> {
    /// Padded length `T`.
    pub steps: usize,
    /// Sentences `B`.
    pub batch: usize,
    /// Length of each sentence (`B` entries, each `1..=T`).
    pub lens: &'a [usize],
    /// Word ids (`T·B`; 0 = padding).
    pub word_ids: &'a [u32],
    /// Capitalization class of each token, `0..8` (`T·B`; ignored without caps).
    pub cap_ids: &'a [u32],
    /// Character ids (`T·B·W`): token `p` owns `char_ids[p·W .. p·W + W]`, of which the
    /// first `char_lens[p]` are real. Ignored without the char CNN (may be empty).
    pub char_ids: &'a [u32],
    /// Characters of each token (`T·B`, each `≤ W`). Ignored without the char CNN.
    pub char_lens: &'a [usize],
    /// Character slots per token `W`.
    pub word_len_max: usize,
    /// Contextual features (`T·B·S·D` for `S` states of width `D`): position `p` owns
    /// `contextual[p·S·D ..][..S·D]`, state `j` at offset `j·D`; padding rows are never
    /// read by the loss (zeros by convention). Ignored without contextual features (may
    /// be empty).
    pub contextual: &'a [f32],
}

impl ModelInput<'_> {
    /// Positions `T·B`.
    pub fn positions(&self) -> usize {
        self.steps * self.batch
    }

    /// Whether position `p = t·B + b` is inside its sentence.
    pub fn is_real(&self, p: usize) -> bool {
        p / self.batch < self.lens[p % self.batch]
    }

    /// The (T·B) mask of real positions.
    pub fn mask(&self) -> Vec<bool> {
        (0..self.positions()).map(|p| self.is_real(p)).collect()
    }

    /// Checks lengths and slice sizes (ids against tables are checked by the model);
    /// `contextual` is the width `S·D` of a position's contextual features, if any.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the inconsistent field.
    pub fn validate(
        &self,
        caps: bool,
        chars: bool,
        contextual: Option<usize>,
    ) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Input(m));
        let n = self.positions();
        if self.steps == 0 || self.batch == 0 {
            return bad(format!(
                "empty batch (T = {}, B = {})",
                self.steps, self.batch
            ));
        }
        if self.lens.len() != self.batch {
            return bad(format!(
                "{} lengths for a batch of {}",
                self.lens.len(),
                self.batch
            ));
        }
        if let Some((b, &l)) = self
            .lens
            .iter()
            .enumerate()
            .find(|&(_, &l)| l == 0 || l > self.steps)
        {
            return bad(format!(
                "sentence {b} has length {l}, outside 1..={}",
                self.steps
            ));
        }
        if self.word_ids.len() != n {
            return bad(format!("{} word ids for T·B = {n}", self.word_ids.len()));
        }
        if caps {
            if self.cap_ids.len() != n {
                return bad(format!("{} cap ids for T·B = {n}", self.cap_ids.len()));
            }
            if let Some(p) =
                (0..n).find(|&p| self.is_real(p) && self.cap_ids[p] as usize >= NUM_CAPS)
            {
                return bad(format!(
                    "cap id {} at position {p} is outside 0..{NUM_CAPS}",
                    self.cap_ids[p]
                ));
            }
        }
        if let Some(width) = contextual
            && self.contextual.len() != n * width
        {
            return bad(format!(
                "{} contextual features for T·B = {n} positions of {width}",
                self.contextual.len()
            ));
        }
        if chars {
            let w = self.word_len_max;
            if w == 0 {
                return bad("word_len_max must be positive with the char CNN".into());
            }
            if self.char_ids.len() != n * w || self.char_lens.len() != n {
                return bad(format!(
                    "{} char ids / {} char lengths for T·B = {n}, W = {w}",
                    self.char_ids.len(),
                    self.char_lens.len()
                ));
            }
            if let Some(p) = (0..n).find(|&p| self.char_lens[p] > w) {
                return bad(format!(
                    "token {p} has {} characters, more than W = {w}",
                    self.char_lens[p]
                ));
            }
        }
        Ok(())
    }
}
