//! A bounded pool of reusable caches, and the element-counting allocator the caches use.

use super::*;

/// A cache that can wait in a [`Pool`].
pub(super) trait Pooled {
    /// Among the caches that fit, the smallest is taken first (row capacity for the
    /// caches that have rows).
    fn rank(&self) -> usize;
    /// Elements in all its buffers together.
    fn elems(&self) -> usize;
}

/// Caches waiting for reuse, oldest first, bounded in count and in elements.
pub(super) struct Pool<C> {
    items: Mutex<Vec<C>>,
    /// Most caches kept.
    limit: usize,
    /// Most elements kept (all caches together).
    max_elems: usize,
}

impl<C: Pooled> Pool<C> {
    pub(super) fn new(limit: usize, max_elems: usize) -> Self {
        Pool {
            items: Mutex::new(Vec::new()),
            limit,
            max_elems,
        }
    }

    /// Caches waiting.
    pub(super) fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// Removes and returns the first-ranked cache for which `fits` holds.
    pub(super) fn take(&self, fits: impl Fn(&C) -> bool) -> Option<C> {
        let mut items = lock(&self.items);
        let best = items
            .iter()
            .enumerate()
            .filter(|(_, c)| fits(c))
            .min_by_key(|(_, c)| c.rank())
            .map(|(i, _)| i)?;
        Some(items.remove(best))
    }

    /// Returns caches, dropping the oldest past the count or element bound.
    pub(super) fn give(&self, caches: impl IntoIterator<Item = C>) {
        let mut items = lock(&self.items);
        items.extend(caches);
        // The oldest past the count bound go first; what they hold no longer counts.
        let mut excess = items.len().saturating_sub(self.limit);
        let mut held: usize = items[excess..].iter().map(Pooled::elems).sum();
        for c in &items[excess..] {
            if held <= self.max_elems {
                break;
            }
            held -= c.elems();
            excess += 1;
        }
        items.drain(..excess);
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it (the
/// pool and caches hold no invariant a panic could break: every use rewrites them).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Allocates buffers on a backend and counts their elements (a cache's `elems`).
pub(super) struct Counted<'a, B: Backend> {
    be: &'a B,
    /// Elements allocated so far.
    pub(super) elems: Cell<usize>,
}

impl<'a, B: Backend> Counted<'a, B> {
    pub(super) fn new(be: &'a B) -> Self {
        Counted {
            be,
            elems: Cell::new(0),
        }
    }

    /// A zero-filled buffer of `n` elements (at least one).
    pub(super) fn zeros(&self, n: usize) -> Result<B::Buf, NumError> {
        self.elems.set(self.elems.get() + n.max(1));
        self.be.zeros(n.max(1))
    }

    /// A buffer holding `data`.
    pub(super) fn upload(&self, data: &[B::Elem]) -> Result<B::Buf, NumError> {
        self.elems.set(self.elems.get() + data.len());
        self.be.upload(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `elems` elements and rank `rank`.
    #[derive(Debug, PartialEq)]
    struct Fake {
        elems: usize,
        rank: usize,
    }

    impl Pooled for Fake {
        fn rank(&self) -> usize {
            self.rank
        }
        fn elems(&self) -> usize {
            self.elems
        }
    }

    fn sizes(p: &Pool<Fake>) -> Vec<usize> {
        lock(&p.items).iter().map(|c| c.elems).collect()
    }

    fn fakes(sizes: &[usize]) -> Vec<Fake> {
        sizes
            .iter()
            .map(|&elems| Fake { elems, rank: elems })
            .collect()
    }

    #[test]
    fn give_drops_only_as_many_of_the_oldest_as_the_bounds_need() {
        // Count bound first: [8] goes, and [2, 2] (4 ≤ 10 elements) both stay.
        let p = Pool::new(2, 10);
        p.give(fakes(&[8, 2, 2]));
        assert_eq!(sizes(&p), [2, 2]);
        // Element bound: the oldest go until the rest fit.
        let p = Pool::new(10, 10);
        p.give(fakes(&[6, 5, 4, 1]));
        assert_eq!(sizes(&p), [5, 4, 1]);
        p.give(fakes(&[3]));
        assert_eq!(sizes(&p), [4, 1, 3]);
        // Both bounds at once, and a single cache larger than the element bound.
        let p = Pool::new(3, 7);
        p.give(fakes(&[1, 1, 1, 6, 1]));
        assert_eq!(sizes(&p), [6, 1]);
        p.give(fakes(&[20]));
        assert!(
            sizes(&p).is_empty(),
            "nothing that exceeds the bound alone is kept"
        );
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn take_returns_the_best_ranked_cache_that_fits_and_removes_it() {
        let p = Pool::new(8, 100);
        p.give(vec![
            Fake { elems: 9, rank: 3 },
            Fake { elems: 4, rank: 1 },
            Fake { elems: 7, rank: 2 },
        ]);
        assert_eq!(p.take(|c| c.elems >= 5), Some(Fake { elems: 7, rank: 2 }));
        assert_eq!(p.take(|c| c.elems >= 5), Some(Fake { elems: 9, rank: 3 }));
        assert_eq!(p.take(|c| c.elems >= 5), None);
        assert_eq!(sizes(&p), [4]);
    }

    #[test]
    fn counted_allocations_add_up_their_elements() {
        let be = sclstm_cpu::CpuBackend::<f32>::new(1).unwrap();
        let c = Counted::new(&be);
        c.zeros(5).unwrap();
        c.zeros(0).unwrap();
        c.upload(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            c.elems.get(),
            5 + 1 + 3,
            "an empty buffer still holds one element"
        );
    }
}
