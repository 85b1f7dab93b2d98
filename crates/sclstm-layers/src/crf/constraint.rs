//! The BIO constraint: transitions a chunk scheme forbids (`O → I-X`, `B-X → I-Y`), as
//! `-∞` scores the CRF never takes.

/// Allowed transitions for BIO-constrained decoding: `I-X` may only follow `B-X` or
/// `I-X`, and may not start a sentence. Tags that are not `B-`/`I-` (e.g. `O`, POS
/// tags) are unconstrained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BioConstraint {
    /// Number of tags `L`.
    pub(super) tags: usize,
    /// `L` entries: tag may start a sentence.
    pub(super) start: Vec<bool>,
    /// `L·L` entries, `[from·L + to]`: `to` may follow `from`.
    pub(super) allowed: Vec<bool>,
}

impl BioConstraint {
    /// Builds the constraint from tag names indexed by tag id (`"O"`, `"B-PER"`, `"I-PER"`, …).
    pub fn from_tags<S: AsRef<str>>(names: &[S]) -> Self {
        let tags = names.len();
        let parsed: Vec<(char, &str)> = names
            .iter()
            .map(|n| {
                let n = n.as_ref();
                match (n.strip_prefix("B-"), n.strip_prefix("I-")) {
                    (Some(ty), _) => ('B', ty),
                    (_, Some(ty)) => ('I', ty),
                    _ => ('O', ""),
                }
            })
            .collect();
        let start = parsed.iter().map(|&(k, _)| k != 'I').collect();
        let mut allowed = vec![true; tags * tags];
        for (from, &(kf, tf)) in parsed.iter().enumerate() {
            for (to, &(kt, tt)) in parsed.iter().enumerate() {
                if kt == 'I' {
                    allowed[from * tags + to] = kf != 'O' && tf == tt;
                }
            }
        }
        BioConstraint {
            tags,
            start,
            allowed,
        }
    }

    /// Number of tags the constraint was built for.
    pub fn num_tags(&self) -> usize {
        self.tags
    }

    /// Whether tag `to` may directly follow tag `from`.
    pub fn allows(&self, from: usize, to: usize) -> bool {
        self.allowed[from * self.tags + to]
    }

    /// Whether a sentence may start with tag `to`.
    pub fn allows_start(&self, to: usize) -> bool {
        self.start[to]
    }
}
