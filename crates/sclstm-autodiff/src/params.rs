//! Named trainable parameters.
//!
//! A [`ParamStore`] owns every parameter matrix under a stable name (e.g.
//! `"word_emb"`, `"sc_lstm.0.fwd.w"`); names are what checkpoints and optimizer state
//! are keyed by. A parameter enters a tape by id ([`crate::Tape::param`]): the tape
//! borrows the store and never copies the matrix, so a 400k-row embedding table costs
//! nothing per step to put on the tape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sclstm_core::{Matrix, Real};

use crate::AutodiffError;

/// Index of a parameter in its [`ParamStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

impl ParamId {
    /// The id as a `usize` index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Source of [`ParamStore::store_id`] numbers: every store (and every copy of one) of the
/// process gets its own.
static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

fn next_store() -> u64 {
    NEXT_STORE.fetch_add(1, Ordering::Relaxed)
}

/// Named parameter matrices in insertion order.
#[derive(Debug)]
pub struct ParamStore<R> {
    names: Vec<String>,
    values: Vec<Matrix<R>>,
    by_name: HashMap<String, ParamId>,
    /// This store's identity: with a [`ParamId`] it names one parameter of the process.
    store: u64,
    /// Counts mutable accesses: equal versions of one store mean equal values.
    version: u64,
}

impl<R: Clone> Clone for ParamStore<R> {
    /// A copy with an identity of its own (the copy's values may diverge).
    fn clone(&self) -> Self {
        ParamStore {
            names: self.names.clone(),
            values: self.values.clone(),
            by_name: self.by_name.clone(),
            store: next_store(),
            version: self.version,
        }
    }
}

impl<R: Real> Default for ParamStore<R> {
    fn default() -> Self {
        ParamStore::new()
    }
}

impl<R: Real> ParamStore<R> {
    /// An empty store.
    pub fn new() -> Self {
        ParamStore {
            names: Vec::new(),
            values: Vec::new(),
            by_name: HashMap::new(),
            store: next_store(),
            version: 0,
        }
    }

    /// This store's identity, unique in the process (a copy has its own): with a
    /// [`ParamId`] it names one parameter.
    pub fn store_id(&self) -> u64 {
        self.store
    }

    /// The store's version: it grows with every mutable access ([`ParamStore::add`],
    /// [`ParamStore::get_mut`], [`ParamStore::set`]), so equal versions of one store mean
    /// equal values. Layers key work derived from the weights (device copies) by store,
    /// parameter and version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Adds a parameter under a new name.
    ///
    /// # Errors
    /// [`AutodiffError::Duplicate`] if the name is taken.
    pub fn add(&mut self, name: &str, value: Matrix<R>) -> Result<ParamId, AutodiffError> {
        if self.by_name.contains_key(name) {
            return Err(AutodiffError::Duplicate(name.to_string()));
        }
        let id = ParamId(u32::try_from(self.values.len()).expect("internal: < 2^32 parameters"));
        // Standard (row-major) layout lets optimizers and gemm work on flat slices.
        let value = standard(value);
        self.version += 1;
        self.names.push(name.to_string());
        self.values.push(value);
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the store holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The id of a named parameter.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.by_name.get(name).copied()
    }

    /// The name of a parameter.
    ///
    /// # Panics
    /// If `id` does not come from this store (an internal bug).
    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.index()]
    }

    /// A parameter's value.
    ///
    /// # Panics
    /// If `id` does not come from this store (an internal bug).
    pub fn get(&self, id: ParamId) -> &Matrix<R> {
        &self.values[id.index()]
    }

    /// A parameter's value, mutably (optimizers, checkpoint loading).
    ///
    /// # Panics
    /// If `id` does not come from this store (an internal bug).
    pub fn get_mut(&mut self, id: ParamId) -> &mut Matrix<R> {
        self.version += 1;
        &mut self.values[id.index()]
    }

    /// Replaces a parameter's value, keeping its shape.
    ///
    /// # Errors
    /// [`AutodiffError::Unknown`] for an unknown name, [`AutodiffError::Shape`] if the shape differs.
    pub fn set(&mut self, name: &str, value: Matrix<R>) -> Result<(), AutodiffError> {
        let id = self
            .id(name)
            .ok_or_else(|| AutodiffError::Unknown(name.to_string()))?;
        let slot = &mut self.values[id.index()];
        if slot.dim() != value.dim() {
            return Err(AutodiffError::Shape {
                name: name.to_string(),
                expected: slot.dim(),
                found: value.dim(),
            });
        }
        *slot = standard(value);
        self.version += 1;
        Ok(())
    }

    /// All parameters as `(id, name, value)` in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &str, &Matrix<R>)> {
        self.names
            .iter()
            .zip(&self.values)
            .enumerate()
            .map(|(i, (n, v))| (ParamId(i as u32), n.as_str(), v))
    }

    /// Total number of scalar parameters.
    pub fn num_scalars(&self) -> usize {
        self.values.iter().map(Matrix::len).sum()
    }
}

/// The matrix in standard (row-major, contiguous) layout.
fn standard<R: Real>(m: Matrix<R>) -> Matrix<R> {
    if m.is_standard_layout() {
        m
    } else {
        m.as_standard_layout().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn version_counts_mutable_accesses_and_copies_get_their_own_identity() {
        let mut s = ParamStore::<f64>::new();
        let v0 = s.version();
        let id = s.add("a", Matrix::zeros((2, 2))).unwrap();
        let v1 = s.version();
        assert!(v1 > v0);
        let _ = s.get(id);
        assert_eq!(s.version(), v1, "reading leaves the version alone");
        s.get_mut(id)[[0, 0]] = 1.0;
        let v2 = s.version();
        assert!(v2 > v1);
        s.set("a", Matrix::ones((2, 2))).unwrap();
        assert!(s.version() > v2);
        let copy = s.clone();
        assert_ne!(
            copy.store_id(),
            s.store_id(),
            "a copy may diverge: its own identity"
        );
        assert_eq!(copy.version(), s.version());
        assert_ne!(
            ParamStore::<f64>::new().store_id(),
            ParamStore::<f64>::new().store_id()
        );
    }

    #[test]
    fn names_are_stable_and_unique() {
        let mut s = ParamStore::<f64>::new();
        let a = s.add("a", array![[1.0, 2.0]]).unwrap();
        let b = s.add("b", array![[3.0]]).unwrap();
        assert_eq!(s.id("b"), Some(b));
        assert_eq!(s.name(a), "a");
        assert_eq!(s.num_scalars(), 3);
        assert!(matches!(
            s.add("a", array![[0.0]]),
            Err(AutodiffError::Duplicate(_))
        ));
        assert!(matches!(
            s.set("a", array![[0.0]]),
            Err(AutodiffError::Shape { .. })
        ));
        assert!(matches!(
            s.set("zz", array![[0.0]]),
            Err(AutodiffError::Unknown(_))
        ));
        s.set("a", array![[5.0, 6.0]]).unwrap();
        assert_eq!(s.get(a)[[0, 1]], 6.0);
        let names: Vec<&str> = s.iter().map(|(_, n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
