//! The layer workspace: the backend, how the two directions of a layer run, and the
//! pools of caches and weight sets reused across calls.

use super::*;

/// Runs the two directions of a bidirectional layer, possibly at the same time, in place
/// of the backend's own [`Backend::join`] (e.g. on threads a test controls).
///
/// The directions share nothing mutable and each writes only its own buffers, so running
/// them concurrently changes no result.
pub trait Join: Send + Sync {
    /// Runs `a` and `b` to completion, in either order or concurrently.
    fn join(&self, a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send));
}

/// A backend plus a pool of reusable direction caches. Cheap to clone; keep one per
/// layer (or per model) so that caches are reused across batches.
pub struct LayerWorkspace<B: Backend> {
    pub(super) backend: Arc<B>,
    pub(super) pool: Arc<Pool<DirCache<B>>>,
    /// Shared input / output buffers of recent calls.
    pub(super) calls: Arc<Pool<CallCache<B>>>,
    /// Device copies of directions' weights of recent calls.
    pub(super) weights: Arc<Pool<WeightBufs<B>>>,
    /// Runs the two directions when set; `None` leaves it to [`Backend::join`].
    pub(super) join: Option<Arc<dyn Join>>,
    /// Forward weight products of calls that do not record run packed when set
    /// ([`LayerWorkspace::set_packed_products`]).
    pub(super) packed: Option<Packed>,
}

impl<B: Backend> Clone for LayerWorkspace<B> {
    fn clone(&self) -> Self {
        LayerWorkspace {
            backend: Arc::clone(&self.backend),
            pool: Arc::clone(&self.pool),
            calls: Arc::clone(&self.calls),
            weights: Arc::clone(&self.weights),
            join: self.join.clone(),
            packed: self.packed,
        }
    }
}

impl<B: Backend> fmt::Debug for LayerWorkspace<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pooled = self.pool.len();
        f.debug_struct("LayerWorkspace")
            .field("backend", &self.backend.name())
            .field("pooled_caches", &pooled)
            .field("concurrent_directions", &self.join.is_some())
            .field("packed_products", &self.packed)
            .finish()
    }
}

/// Direction caches kept for reuse at most; past it the oldest pooled cache is dropped.
/// Enough for every unit of a three-layer model (2 directions × 3 layers, with and
/// without a backward) in two or three row buckets.
pub(super) const POOL_LIMIT: usize = 32;

/// Elements (all buffers together) the pooled caches may hold; past it the oldest are
/// dropped. 128 Mi elements is 512 MiB in f32: the caches of a paper-config training
/// step (batch 10, up to 6 units of 2–10 M elements each) in its usual row buckets, so
/// that steps reuse them, while long batches (evaluation, outliers) do not pin more for
/// the rest of the run.
pub(super) const POOL_ELEMS: usize = 128 << 20;

/// Call caches (shared inputs and outputs of one layer call) kept for reuse at most:
/// three layers with and without a backward, in two or three row buckets.
pub(super) const CALL_POOL_LIMIT: usize = 16;

/// Elements the pooled call caches may hold (128 MiB in f32): a paper-config training
/// step's three call caches hold up to 2 M elements each, an evaluation batch's (2,048
/// padded tokens, three task gates) up to 6 M each.
pub(super) const CALL_POOL_ELEMS: usize = 32 << 20;

/// Weight sets (one direction's weights on the device) kept for reuse at most: both
/// directions of three layers, with and without the backward's copies, for two task sets.
pub(super) const WEIGHT_POOL_LIMIT: usize = 24;

/// Elements the pooled weight sets may hold (256 MiB in f32); one direction of an upper
/// paper-config layer with one task gate holds about 4 M with the backward's copies and
/// the weight gradients.
pub(super) const WEIGHT_POOL_ELEMS: usize = 64 << 20;

impl<B: Backend> LayerWorkspace<B> {
    /// A workspace with an empty cache pool.
    pub fn new(backend: Arc<B>) -> Self {
        LayerWorkspace {
            backend,
            pool: Arc::new(Pool::new(POOL_LIMIT, POOL_ELEMS)),
            calls: Arc::new(Pool::new(CALL_POOL_LIMIT, CALL_POOL_ELEMS)),
            weights: Arc::new(Pool::new(WEIGHT_POOL_LIMIT, WEIGHT_POOL_ELEMS)),
            join: None,
            packed: None,
        }
    }

    /// Runs the two directions of every bidirectional layer through `join` instead of the
    /// backend's [`Backend::join`]; `None` goes back to the backend's.
    pub fn set_join(&mut self, join: Option<Arc<dyn Join>>) {
        self.join = join;
    }

    /// Whether the two directions of a layer run at the same time: through a [`Join`], or
    /// on a [`Backend::concurrent`] backend.
    pub fn has_join(&self) -> bool {
        self.join.is_some() || self.backend.concurrent()
    }

    /// Runs the forward's weight products of every call that does not record a backward
    /// packed as `p` says ([`Backend::gemm_packed`]: weights and inputs rounded to bf16
    /// or quantized to int8), or, with `None`, in f32 again. For inference: recording
    /// calls (training) stay f32 either way.
    ///
    /// # Errors
    /// The backend's [`Backend::packed_products`] error when it has none (the setting
    /// is then unchanged).
    pub fn set_packed_products(&mut self, p: Option<Packed>) -> Result<(), NumError> {
        if let Some(p) = p {
            self.backend.packed_products(p)?;
        }
        self.packed = p;
        Ok(())
    }

    /// How a call's forward weight products run: packed for a call that does not
    /// `record`, on a workspace with packed products; else f32 (`None`).
    pub(super) fn packed_for(&self, record: bool) -> Option<Packed> {
        self.packed.filter(|_| !record)
    }

    /// Runs `a` and `b` through the [`Join`] if one is set, else the backend's.
    fn join(&self, a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send)) {
        match &self.join {
            Some(join) => join.join(a, b),
            None => self.backend.join(a, b),
        }
    }

    /// Runs `f(i, item)` for every unit's cache (or every direction's weight set) and
    /// returns the results in order. With a [`Join`] the items are dealt to its two sides
    /// by parity: for a bidirectional layer one side runs the forward direction and the
    /// other the reverse one (equal work).
    pub(super) fn each_unit<C: Send, T: Send>(
        &self,
        caches: &mut [C],
        f: impl Fn(usize, &mut C) -> T + Sync,
    ) -> Vec<T> {
        let n = caches.len();
        if self.has_join() && n >= 2 {
            let (mut even, mut odd): (Vec<_>, Vec<_>) =
                caches.iter_mut().enumerate().partition(|(i, _)| i % 2 == 0);
            let (mut r_even, mut r_odd) = (Vec::new(), Vec::new());
            self.join(
                &mut || r_even = even.iter_mut().map(|(i, dc)| f(*i, dc)).collect(),
                &mut || r_odd = odd.iter_mut().map(|(i, dc)| f(*i, dc)).collect(),
            );
            let (mut r_even, mut r_odd) = (r_even.into_iter(), r_odd.into_iter());
            (0..n)
                .map(|i| {
                    if i % 2 == 0 {
                        r_even.next()
                    } else {
                        r_odd.next()
                    }
                    .expect("internal: the join ran every unit")
                })
                .collect()
        } else {
            caches
                .iter_mut()
                .enumerate()
                .map(|(i, dc)| f(i, dc))
                .collect()
        }
    }

    /// The backend the layers run on.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Number of direction caches waiting in the pool for reuse.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// A cache fitting `geo`: the smallest pooled one that fits (see
    /// [`DirCache::fits`]), else a new one whose row capacity is the next power of two.
    ///
    /// Batch lengths vary from step to step, so capacities are bucketed by powers of two:
    /// a handful of sizes serve every batch with at most 2× unused rows, instead of a
    /// pool that fills with caches slightly too short for the next batch while longer
    /// ones are allocated and freed every step.
    pub(super) fn take(&self, geo: &DirGeometry, backward: bool) -> Result<DirCache<B>, NumError> {
        match self.pool.take(|c| c.fits(geo, backward)) {
            Some(mut c) => {
                // Same layer sizes, enough rows: serve this call's (T, B) from the prefix.
                c.geo = geo.clone();
                Ok(c)
            }
            None => DirCache::new(self.backend.as_ref(), geo, backward),
        }
    }

    /// Returns caches to the pool, dropping the oldest past [`POOL_LIMIT`] caches or
    /// [`POOL_ELEMS`] elements.
    pub(super) fn give(&self, caches: Vec<DirCache<B>>) {
        self.pool.give(caches);
    }

    /// A call cache for a call of geometry `geo` with `nd` directions, pooled or new
    /// (bucketed by powers of two of `T·B`, as the direction caches are by `B + N`).
    pub(super) fn take_call(&self, geo: &DirGeometry, nd: usize) -> Result<CallCache<B>, NumError> {
        match self.calls.take(|c| c.fits(geo, nd)) {
            Some(c) => Ok(c),
            None => CallCache::new(self.backend.as_ref(), geo, nd),
        }
    }

    /// One weight set per direction for a layer of `geo` (with the backward's copies
    /// when `backward`), given the stamp each direction's weights carry: a pooled set
    /// already holding them ([`WeightBufs::holds`]) is taken first and needs no write;
    /// otherwise a pooled set that fits and holds nothing a later call will ask for
    /// ([`WeightBufs::free_for`]: two layers of the same sizes keep a set each), or a
    /// new one.
    pub(super) fn take_weights(
        &self,
        geo: &DirGeometry,
        stamps: &[Option<Stamp>],
        backward: bool,
    ) -> Result<Vec<WeightBufs<B>>, NumError> {
        stamps
            .iter()
            .map(|stamp| {
                let fits = |w: &WeightBufs<B>| w.fits(geo, backward);
                let packed = self.packed_for(backward);
                let kept = self
                    .weights
                    .take(|w| fits(w) && w.holds(stamp, backward, packed));
                let free = || self.weights.take(|w| fits(w) && w.free_for(stamp));
                match kept.or_else(free) {
                    Some(w) => Ok(w),
                    None => WeightBufs::new(self.backend.as_ref(), geo, backward),
                }
            })
            .collect()
    }

    /// Returns a call's caches to their pools.
    pub(super) fn give_all(&self, held: HeldCaches<B>) {
        self.give(held.units);
        self.calls.give(held.call);
        self.weights.give(held.weights);
    }
}

/// The caches a layer call takes from the workspace (and a recorded layer keeps for its
/// backward).
pub(super) struct HeldCaches<B: Backend> {
    /// One per unit, in unit order.
    pub(super) units: Vec<DirCache<B>>,
    /// The call cache (`None` only before it is taken).
    pub(super) call: Option<CallCache<B>>,
    /// One weight set per direction.
    pub(super) weights: Vec<WeightBufs<B>>,
}

impl<B: Backend> Default for HeldCaches<B> {
    fn default() -> Self {
        HeldCaches {
            units: Vec::new(),
            call: None,
            weights: Vec::new(),
        }
    }
}
