//! [`WgpuBackend`]: the `Backend` trait on wgpu buffers, one launcher per kernel.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sclstm_core::{Backend, BackendErrorKind, CellStep, Gemm, NumError, RowCopy};
use wgpu::util::{DeviceExt, StagingBelt};

use crate::WgpuError;
use crate::context::{AdapterSummary, CompiledKernel, Kernel, MAX_STORAGE_BINDINGS, WgpuContext};
use crate::uniforms::{CellDims, GemmDims, RowDims};

/// Invocations per workgroup of the pointwise kernels (`@workgroup_size(256)`).
const POINTWISE_WG: u64 = 256;
/// Output tile edge of the `gemm` kernel (`BM = BN = 64` in `shaders/gemm.wgsl`).
const GEMM_TILE: u64 = 64;
/// Output tile of the `gemm_small_m` kernel: `SM_ROWS × SM_COLS` in `shaders/gemm.wgsl`.
const SMALL_M_TILE: (u64, u64) = (16, 64);
/// Largest m sent to `gemm_small_m`. Its 16-row tiles waste at most 15 rows where a
/// 64-row tile wastes up to 63 (84 % of the work of the per-step products at batch 10);
/// above 32 rows the 64 × 64 tile's reuse of each loaded element wins.
pub const SMALL_M_MAX: usize = 32;
/// Dispatches recorded before the pending encoder is submitted without waiting: the
/// number of slots in the uniform arena.
const UNIFORM_SLOTS: u64 = 4096;
/// Bytes per uniform slot: the largest uniform struct, rounded up to the device's
/// `min_uniform_buffer_offset_alignment` at construction (256 by default).
const UNIFORM_SLOT_MIN: u64 = 256;
/// Bind groups kept before the cache is emptied and refilled. A training run binds a
/// few hundred combinations; the cap only matters for a caller that keeps many
/// long-lived buffers and binds them in ever new combinations.
pub const BIND_GROUP_CACHE_MAX: usize = 2048;
/// Words (u32) of the index arena at construction. It grows, to the next power of two,
/// when the row lists recorded for one submission outgrow it; 16 Ki words hold the ids of
/// dozens of `(T·B = 300)`-row gathers and scatter-adds.
const INDEX_ARENA_MIN_WORDS: usize = 1 << 14;
/// Size of one chunk of the staging belt that carries `write` data (a write larger
/// than this gets a chunk of its own size, reused by later writes that fit).
const STAGING_CHUNK: u64 = 1 << 20;

/// Source of [`WgpuBuf`] identities: never reused, so a cache key can never name a
/// dropped buffer's successor.
static NEXT_BUF_ID: AtomicU64 = AtomicU64::new(1);

/// Identities of dropped buffers whose bind groups are still to be evicted.
type DroppedIds = Arc<Mutex<Vec<u64>>>;

/// Locks `m`, recovering the data if a thread panicked while holding it (the data is
/// a cache or a list of ids, consistent after any single statement).
fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A device buffer of `f32` with its logical length in elements.
///
/// The wgpu buffer holds at least one element, since wgpu rejects empty bindings.
/// Each buffer has an identity of its own; the backend caches bind groups by the
/// identities they bind, and dropping the buffer evicts those bind groups (a cached
/// bind group would otherwise keep the buffer's memory alive).
#[derive(Debug)]
pub struct WgpuBuf {
    buffer: wgpu::Buffer,
    len: usize,
    id: u64,
    dropped: DroppedIds,
}

impl WgpuBuf {
    fn new(buffer: wgpu::Buffer, len: usize, dropped: &DroppedIds) -> Self {
        WgpuBuf {
            buffer,
            len,
            id: NEXT_BUF_ID.fetch_add(1, Ordering::Relaxed),
            dropped: Arc::clone(dropped),
        }
    }

    /// Logical length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying wgpu buffer (usages: storage, copy source, copy destination).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for WgpuBuf {
    fn drop(&mut self) {
        // Only records the id: the backend evicts at its next dispatch or sync, under
        // its own lock, so dropping never waits for a dispatch in another thread.
        lock_any(&self.dropped).push(self.id);
    }
}

/// Counters of recorded work since the backend was created (see [`WgpuBackend::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WgpuStats {
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Of those, products run by `gemm_small_m`.
    pub small_m_gemms: u64,
    /// Bind groups created (cache misses); every other dispatch reused a cached one.
    pub bind_groups_created: u64,
    /// Bind groups evicted because a buffer they bind was dropped.
    pub bind_groups_evicted: u64,
    /// Compute passes begun: one per run of dispatches between copies or submits.
    pub compute_passes: u64,
    /// Command buffers submitted.
    pub submits: u64,
    /// Times the index arena (row ids of gathers and scatter-adds) was replaced by a
    /// larger one.
    pub index_arena_grows: u64,
}

/// Cache key of a bind group: the kernel and the identities of its storage buffers
/// (0 past the kernel's last binding). The uniform is always the arena at a dynamic
/// offset, so it is not part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BindKey {
    kernel: Kernel,
    bufs: [u64; MAX_STORAGE_BINDINGS],
}

/// Work recorded but not yet submitted, and the bind group cache.
struct Pending {
    /// The open compute pass, if the last recorded command was a dispatch. Declared
    /// before `encoder` so it is dropped (ended) first.
    pass: Option<wgpu::ComputePass<'static>>,
    /// The kernel whose pipeline `pass` has bound.
    pass_kernel: Option<Kernel>,
    encoder: Option<wgpu::CommandEncoder>,
    /// Uniform bytes of the recorded dispatches, one slot each, uploaded to the arena
    /// just before the encoder is submitted.
    uniforms: Vec<u8>,
    /// Row lists of the recorded gathers and scatter-adds (ids; sorted positions and
    /// segments), each at its own offset, uploaded to `index_arena` just before the
    /// encoder is submitted (like `uniforms`). Cleared, not freed, at each submit.
    index: Vec<u32>,
    /// The storage buffer the row kernels read `index` from. Behind an `Arc` so a
    /// dispatch can bind it while `Pending` is borrowed; replaced by a larger one (after
    /// a submit) when one submission's lists outgrow it, which evicts its bind groups.
    index_arena: Arc<WgpuBuf>,
    /// Scratch for a scatter-add's positions sorted by (id, p), kept for its capacity.
    order: Vec<u32>,
    /// Mapped staging memory for `write`: its copies are recorded in `encoder`, and its
    /// chunks return for reuse once the submission that read them has run.
    belt: StagingBelt,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    stats: WgpuStats,
}

/// The wgpu backend: every kernel call is recorded into one pending command encoder,
/// submitted at [`Backend::sync`] or [`Backend::download`] (and every 4096
/// dispatches), so a layer's whole time loop becomes one submission with no readback
/// per step.
///
/// Per-dispatch host cost is kept to recording: consecutive dispatches share one
/// compute pass (wgpu begins a new command buffer for every pass), and bind groups are
/// cached by (kernel, buffer identities), so a time loop that binds the same buffers at
/// every step creates its bind groups once. What changes from step to step (the
/// step's rows and offsets, the gemm offsets) travels in the uniform.
///
/// Per-dispatch uniforms live in one arena buffer, one aligned slot per dispatch of
/// the pending encoder, bound with a dynamic offset. The slots are written with a
/// single `queue.write_buffer` right before the encoder is submitted: such a write
/// lands before the whole submission runs, so each dispatch needs its own slot, and a
/// full arena forces a submit before slots are reused.
///
/// Host data reaches the device through a staging belt (mapped chunks reused from one
/// submission to the next) and comes back through one reusable readback buffer, as
/// large as the largest download so far: neither allocates once the sizes have been seen.
///
/// Row ids of gathers and scatter-adds travel like the uniforms: each call appends its
/// lists to a host vector and records its offset in its uniform, and the vector is
/// written to one *index arena* storage buffer right before the submit, so calls with
/// different ids recorded back to back each read their own. Unlike a staging copy, this
/// keeps the dispatches in one compute pass. The arena grows (after a submit) to the
/// largest demand of one submission, so steady-state training allocates nothing per call.
///
/// wgpu validation and out-of-memory errors are caught with error scopes around each
/// submit (where wgpu reports errors of recorded passes), each bind group creation and
/// each allocation, and returned as [`WgpuError::Device`].
pub struct WgpuBackend {
    ctx: WgpuContext,
    pending: Mutex<Pending>,
    /// `MAP_READ` buffer for `download`, grown to the largest download; its lock is
    /// held for a whole download (taken before `pending`, never after).
    readback: Mutex<Option<wgpu::Buffer>>,
    arena: wgpu::Buffer,
    slot_bytes: u64,
    /// Identities of dropped buffers, filled by [`WgpuBuf`]'s `Drop`.
    dropped: DroppedIds,
    /// Bound in place of the bias when a gemm has none.
    dummy: WgpuBuf,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl WgpuBackend {
    /// Acquires an adapter (see [`WgpuContext::new`]) and builds the backend on it.
    pub fn new() -> Result<Self, WgpuError> {
        Ok(Self::from_context(WgpuContext::new()?))
    }

    /// Builds the backend on an existing context (for tests or a shared device).
    pub fn from_context(ctx: WgpuContext) -> Self {
        let dropped = DroppedIds::default();
        let dummy = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("no bias"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let dummy = WgpuBuf::new(dummy, 1, &dropped);
        let align = u64::from(ctx.device().limits().min_uniform_buffer_offset_alignment);
        let slot_bytes = UNIFORM_SLOT_MIN.next_multiple_of(align.max(1));
        let arena = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: UNIFORM_SLOTS * slot_bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let belt = StagingBelt::new(ctx.device().clone(), STAGING_CHUNK);
        let index_arena = Self::new_index_arena(&ctx, INDEX_ARENA_MIN_WORDS);
        let index_arena = Arc::new(WgpuBuf::new(index_arena, INDEX_ARENA_MIN_WORDS, &dropped));
        WgpuBackend {
            ctx,
            pending: Mutex::new(Pending {
                pass: None,
                pass_kernel: None,
                encoder: None,
                uniforms: Vec::new(),
                index: Vec::new(),
                index_arena,
                order: Vec::new(),
                belt,
                bind_groups: HashMap::new(),
                stats: WgpuStats::default(),
            }),
            readback: Mutex::new(None),
            arena,
            slot_bytes,
            dropped,
            dummy,
        }
    }

    /// A storage buffer of `words` u32 for the row lists of gathers and scatter-adds.
    fn new_index_arena(ctx: &WgpuContext, words: usize) -> wgpu::Buffer {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("index arena"),
            size: 4 * words as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// The device context.
    pub fn context(&self) -> &WgpuContext {
        &self.ctx
    }

    /// Adapter name, device type, API and driver, for printing at start-up.
    pub fn adapter(&self) -> AdapterSummary {
        self.ctx.summary()
    }

    /// Counters of the work recorded so far (dispatches, bind groups, passes, submits).
    pub fn stats(&self) -> WgpuStats {
        self.lock().stats
    }

    /// Bind groups currently cached (after evicting those of dropped buffers).
    pub fn cached_bind_groups(&self) -> usize {
        let mut pending = self.lock();
        self.evict_dropped(&mut pending);
        pending.bind_groups.len()
    }

    fn device(&self) -> &wgpu::Device {
        self.ctx.device()
    }

    /// Rejects buffers above the per-binding limit: they could never be bound.
    fn check_len(&self, len: usize) -> Result<u64, WgpuError> {
        let bytes = 4 * len.max(1) as u64;
        let max_bytes = self.device().limits().max_storage_buffer_binding_size;
        if bytes > max_bytes {
            return Err(WgpuError::BufferTooLarge { len, max_bytes });
        }
        Ok(bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .expect("internal: pending encoder lock poisoned")
    }

    /// Drops cached bind groups that bind a buffer dropped since the last call.
    fn evict_dropped(&self, pending: &mut Pending) {
        let ids: HashSet<u64> = {
            let mut dropped = lock_any(&self.dropped);
            if dropped.is_empty() {
                return;
            }
            dropped.drain(..).collect()
        };
        let before = pending.bind_groups.len();
        pending
            .bind_groups
            .retain(|key, _| !key.bufs.iter().any(|id| ids.contains(id)));
        pending.stats.bind_groups_evicted += (before - pending.bind_groups.len()) as u64;
    }

    /// Ends the open compute pass, if any, so the encoder can record copies.
    ///
    /// wgpu-core validates a pass's commands when the encoder is finished (inside the
    /// submit's error scope); ending a pass fails only on a nested pass or a finished
    /// encoder, which this type never creates.
    fn end_pass(pending: &mut Pending) {
        pending.pass = None;
        pending.pass_kernel = None;
    }

    /// The pending encoder, created if needed.
    fn encoder<'p>(
        &self,
        encoder: &'p mut Option<wgpu::CommandEncoder>,
    ) -> &'p mut wgpu::CommandEncoder {
        encoder.get_or_insert_with(|| {
            self.device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("sclstm pending work"),
                })
        })
    }

    /// Records a copy or clear into the pending encoder.
    fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut pending = self.lock();
        Self::end_pass(&mut pending);
        f(self.encoder(&mut pending.encoder));
    }

    /// Ends the open pass, uploads the pending uniforms and row lists, then finishes and
    /// submits the pending encoder, if any (does not wait).
    fn submit(&self, pending: &mut Pending) -> Result<(), WgpuError> {
        let pass = pending.pass.take();
        pending.pass_kernel = None;
        let mut result = Ok(());
        if let Some(encoder) = pending.encoder.take() {
            pending.stats.submits += 1;
            let Pending {
                belt,
                uniforms,
                index,
                index_arena,
                ..
            } = pending;
            result = self.ctx.scoped("submitting recorded work", || {
                drop(pass);
                // Unmaps the chunks the encoder copies from, as a submit requires.
                belt.finish();
                // Queue writes land before the whole submission runs (and after the
                // previous one), which is why every dispatch has its own slot / offset.
                if !uniforms.is_empty() {
                    self.ctx.queue().write_buffer(&self.arena, 0, uniforms);
                }
                if !index.is_empty() {
                    self.ctx.queue().write_buffer(
                        &index_arena.buffer,
                        0,
                        bytemuck::cast_slice(index),
                    );
                }
                self.ctx.queue().submit([encoder.finish()]);
                // Chunks come back mapped once this submission has run (seen at a poll).
                belt.recall();
            });
        }
        // Slots and offsets start over with the next encoder; the vectors keep their capacity.
        pending.uniforms.clear();
        pending.index.clear();
        result
    }

    /// Makes room for one more dispatch carrying `words` words of row lists: submits when
    /// the uniform arena is full or the index arena cannot take `words` more, and then
    /// replaces the index arena by one that holds this submission's lists and the new
    /// ones (rounded up to a power of two), so the next submission of the same work fits.
    fn make_room(
        &self,
        pending: &mut Pending,
        op: &'static str,
        words: usize,
    ) -> Result<(), WgpuError> {
        if pending.uniforms.len() as u64 >= UNIFORM_SLOTS * self.slot_bytes {
            self.submit(pending)?;
        }
        let used = pending.index.len();
        let capacity = pending.index_arena.len;
        if used + words <= capacity {
            return Ok(());
        }
        let max_bytes = self.device().limits().max_storage_buffer_binding_size;
        let max_words = usize::try_from(max_bytes / 4).unwrap_or(usize::MAX);
        if words > max_words {
            return Err(WgpuError::RowListTooLarge {
                op,
                words,
                max_bytes,
            });
        }
        // The recorded dispatches read the arena at their submit: send them off before
        // the arena is refilled from offset 0 or replaced.
        self.submit(pending)?;
        let grown = (used + words).next_power_of_two().min(max_words);
        if grown > capacity {
            let buffer = self.ctx.scoped("growing the index arena", || {
                Self::new_index_arena(&self.ctx, grown)
            })?;
            // The old arena's bind groups are evicted when its last `Arc` drops here.
            pending.index_arena = Arc::new(WgpuBuf::new(buffer, grown, &self.dropped));
            pending.stats.index_arena_grows += 1;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), WgpuError> {
        let mut pending = self.lock();
        self.evict_dropped(&mut pending);
        self.submit(&mut pending)
    }

    fn wait(&self) -> Result<(), WgpuError> {
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| WgpuError::Device {
                what: "waiting for the device",
                kind: BackendErrorKind::DeviceLost,
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// The cached bind group of `kernel` on `storage`, created on a miss.
    fn bind_group(
        &self,
        pending: &mut Pending,
        kernel: Kernel,
        layout: &wgpu::BindGroupLayout,
        storage: &[&WgpuBuf],
    ) -> Result<wgpu::BindGroup, WgpuError> {
        let mut key = BindKey {
            kernel,
            bufs: [0; MAX_STORAGE_BINDINGS],
        };
        for (slot, buf) in key.bufs.iter_mut().zip(storage) {
            *slot = buf.id;
        }
        if let Some(bg) = pending.bind_groups.get(&key) {
            return Ok(bg.clone());
        }
        if pending.bind_groups.len() >= BIND_GROUP_CACHE_MAX {
            pending.bind_groups.clear();
        }
        let bind_group = self.ctx.scoped(kernel.entry(), || {
            let uniform = wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.arena,
                    offset: 0,
                    size: wgpu::BufferSize::new(kernel.uniform_size()),
                }),
            };
            let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(uniform)
                .chain(
                    storage
                        .iter()
                        .enumerate()
                        .map(|(i, b)| wgpu::BindGroupEntry {
                            binding: i as u32 + 1,
                            resource: b.buffer.as_entire_binding(),
                        }),
                )
                .collect();
            self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry()),
                layout,
                entries: &entries,
            })
        })?;
        pending.stats.bind_groups_created += 1;
        pending.bind_groups.insert(key, bind_group.clone());
        Ok(bind_group)
    }

    /// Records one compute dispatch. `uniform` goes to binding 0 (its own arena slot,
    /// as a dynamic offset) and `storage[i]` to binding `i + 1` of group 0.
    fn dispatch(
        &self,
        kernel: Kernel,
        uniform: &[u8],
        storage: &[&WgpuBuf],
        groups: (u32, u32),
    ) -> Result<(), WgpuError> {
        let compiled = self.ctx.pipeline(kernel)?;
        let mut pending = self.lock();
        self.make_room(&mut pending, kernel.entry(), 0)?;
        self.record_dispatch(&mut pending, &compiled, kernel, uniform, storage, groups)
    }

    /// Records one dispatch into `pending`, which [`Self::make_room`] has prepared.
    fn record_dispatch(
        &self,
        pending: &mut Pending,
        compiled: &CompiledKernel,
        kernel: Kernel,
        uniform: &[u8],
        storage: &[&WgpuBuf],
        groups: (u32, u32),
    ) -> Result<(), WgpuError> {
        assert!(
            uniform.len() as u64 == kernel.uniform_size()
                && uniform.len() as u64 <= self.slot_bytes,
            "internal: uniform struct does not match the kernel or exceeds an arena slot"
        );
        assert_eq!(
            storage.len(),
            kernel.storage().len(),
            "internal: storage bindings do not match the kernel"
        );
        self.evict_dropped(pending);
        let bind_group = self.bind_group(pending, kernel, &compiled.layout, storage)?;
        let offset = pending.uniforms.len();
        pending.uniforms.extend_from_slice(uniform);
        pending
            .uniforms
            .resize(offset + self.slot_bytes as usize, 0);
        if pending.pass.is_none() {
            let pass = self
                .encoder(&mut pending.encoder)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("sclstm kernels"),
                    timestamp_writes: None,
                })
                .forget_lifetime();
            pending.pass = Some(pass);
            pending.stats.compute_passes += 1;
        }
        let pass = pending
            .pass
            .as_mut()
            .expect("internal: compute pass opened above");
        if pending.pass_kernel != Some(kernel) {
            pass.set_pipeline(&compiled.pipeline);
            pending.pass_kernel = Some(kernel);
        }
        let dynamic = u32::try_from(offset).expect("internal: arena offsets fit in u32");
        pass.set_bind_group(0, &bind_group, &[dynamic]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
        pending.stats.dispatches += 1;
        if kernel == Kernel::GemmSmallM {
            pending.stats.small_m_gemms += 1;
        }
        Ok(())
    }

    /// Workgroup grid for `count` pointwise invocations (see [`fold_groups`]).
    fn pointwise_groups(&self, op: &'static str, count: usize) -> Result<(u32, u32), WgpuError> {
        let max = self.device().limits().max_compute_workgroups_per_dimension;
        let groups = (count as u64).div_ceil(POINTWISE_WG);
        fold_groups(groups, max).ok_or(WgpuError::TooManyWorkgroups {
            op,
            groups: groups.div_ceil(u64::from(max)),
            max,
        })
    }

    /// Records a gather (`dir` = [`RowDir::Gather`]: `src` = table, `dst` = dense) or a
    /// scatter-add (`src` = dense, `dst` = table) of the rows `ids`, whose lengths the
    /// caller has checked ([`RowCopy::check`]); `ids` is not empty and `r.width > 0`.
    ///
    /// The gather's ids, or the scatter-add's sorted positions and segments, are appended
    /// to the pending row lists and found by the kernel at the offsets in its uniform.
    fn record_rows(
        &self,
        dir: RowDir,
        r: &RowCopy,
        ids: &[u32],
        src: &WgpuBuf,
        dst: &WgpuBuf,
    ) -> Result<(), WgpuError> {
        let (kernel, op) = match dir {
            RowDir::Gather => (Kernel::GatherRows, "gather_rows"),
            RowDir::ScatterAdd => (Kernel::ScatterAddRows, "scatter_add_rows"),
        };
        // Checked before anything is appended; a scatter-add has at most one segment per id.
        self.pointwise_groups(op, ids.len() * r.width)?;
        let mut dims = RowDims {
            width: to_u32("row width", r.width)?,
            rows: to_u32("row count", ids.len())?,
            table_stride: to_u32("table stride", r.table_stride)?,
            table_off: to_u32("table offset", r.table_off)?,
            dense_stride: to_u32("dense stride", r.dense_stride)?,
            dense_off: to_u32("dense offset", r.dense_off)?,
            list_off: 0,
            seg_off: 0,
        };
        let compiled = self.ctx.pipeline(kernel)?;
        let mut guard = self.lock();
        let pending = &mut *guard;
        let (rows, words) = match dir {
            RowDir::Gather => (ids.len(), ids.len()),
            RowDir::ScatterAdd => {
                let segments = sort_positions(ids, &mut pending.order);
                (segments, segment_words(ids.len(), segments))
            }
        };
        self.make_room(pending, op, words)?;
        let base = pending.index.len();
        match dir {
            RowDir::Gather => pending.index.extend_from_slice(ids),
            RowDir::ScatterAdd => push_segments(ids, &pending.order, &mut pending.index),
        }
        let arena_offset =
            |at: usize| u32::try_from(at).expect("internal: arena offsets fit in u32");
        dims.rows = to_u32("row count", rows)?;
        dims.list_off = arena_offset(base);
        if let RowDir::ScatterAdd = dir {
            dims.seg_off = arena_offset(base + ids.len());
        }
        let groups = self.pointwise_groups(op, rows * r.width)?;
        let arena = Arc::clone(&pending.index_arena);
        self.record_dispatch(
            pending,
            &compiled,
            kernel,
            bytemuck::bytes_of(&dims),
            &[&arena, src, dst],
            groups,
        )
    }

    /// Copies the first `len` elements of `buf` (`len ≤ buf.len`) back through the
    /// reusable readback buffer, waits for all pending work, and hands them to `f`.
    fn read_back<T>(
        &self,
        buf: &WgpuBuf,
        len: usize,
        f: impl FnOnce(&[f32]) -> T,
    ) -> Result<T, WgpuError> {
        if len == 0 {
            return Ok(f(&[]));
        }
        let bytes = 4 * len as u64;
        let mut readback = lock_any(&self.readback);
        if readback.as_ref().is_none_or(|b| b.size() < bytes) {
            // Drop the smaller one first, so the two never coexist.
            *readback = None;
            *readback = Some(self.ctx.scoped("download", || {
                self.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("sclstm readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?);
        }
        let staging = readback
            .as_ref()
            .expect("internal: readback buffer created above");
        self.record(|encoder| {
            encoder.copy_buffer_to_buffer(&buf.buffer, 0, staging, 0, bytes);
        });
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            // The receiver outlives the poll below; a failed send cannot happen.
            let _ = tx.send(r);
        });
        // Map callbacks only run inside poll.
        self.wait()?;
        let download_error = |message: String| WgpuError::Device {
            what: "download",
            kind: BackendErrorKind::DeviceLost,
            message,
        };
        rx.recv()
            .map_err(|e| download_error(e.to_string()))?
            .map_err(|e| download_error(e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..bytes)
                .map_err(|e| download_error(e.to_string()))?;
            // Mapped memory is aligned in practice; copy it aligned otherwise.
            match bytemuck::try_cast_slice::<u8, f32>(&view) {
                Ok(all) => f(all),
                Err(_) => f(&bytemuck::pod_collect_to_vec::<u8, f32>(&view)),
            }
        };
        staging.unmap();
        Ok(out)
    }

    /// Records one pointwise step kernel on the checked buffers `storage`: one
    /// invocation per element of the step's `rows × hidden` region, none when it is empty.
    fn dispatch_cell(
        &self,
        kernel: Kernel,
        s: &CellStep,
        storage: &[&WgpuBuf],
    ) -> Result<(), WgpuError> {
        let count = s.rows * s.hidden;
        if count == 0 {
            return Ok(());
        }
        let dims = CellDims {
            rows: to_u32("cell step rows", s.rows)?,
            hidden: to_u32("cell step hidden", s.hidden)?,
            step: to_u32("cell step first row", s.step)?,
            prev: to_u32("cell step prev", s.prev)?,
            next: to_u32("cell step next", s.next)?,
            pad0: 0,
            pad1: 0,
            pad2: 0,
        };
        let groups = self.pointwise_groups(kernel.entry(), count)?;
        self.dispatch(kernel, bytemuck::bytes_of(&dims), storage, groups)
    }
}

/// Why a checked id count or position fits the shader's `u32` (see [`sort_positions`]).
const ID_COUNT_FITS: &str = "internal: a checked id count is bounded by a buffer's rows";

/// Which way [`WgpuBackend::record_rows`] moves rows.
#[derive(Debug, Clone, Copy)]
enum RowDir {
    /// Table rows to dense rows.
    Gather,
    /// Dense rows added into table rows.
    ScatterAdd,
}

/// Fills `order` with the positions `0..ids.len()` sorted by `(ids[p], p)` and returns
/// the number of distinct ids (the scatter-add's segments). `order` keeps its capacity
/// from call to call; the key is unique, so the in-place unstable sort is deterministic.
///
/// Positions and counts fit a `u32`: [`RowCopy::check`] has bounded the id count by the
/// dense buffer's rows, and a buffer holds at most 2^25 `f32` (the 128 MiB binding limit).
fn sort_positions(ids: &[u32], order: &mut Vec<u32>) -> usize {
    order.clear();
    order.extend((0..ids.len()).map(|p| u32::try_from(p).expect(ID_COUNT_FITS)));
    order.sort_unstable_by_key(|&p| (ids[p as usize], p));
    let boundaries = order
        .windows(2)
        .filter(|w| ids[w[0] as usize] != ids[w[1] as usize])
        .count();
    usize::from(!ids.is_empty()) + boundaries
}

/// Words a scatter-add's lists take: the sorted positions, an (id, start) pair per
/// segment and the sentinel pair.
fn segment_words(positions: usize, segments: usize) -> usize {
    positions + 2 * segments + 2
}

/// Appends a scatter-add's lists to `out`: the sorted positions `order`, then one
/// (id, start) pair per run of equal ids in `order` (start indexes `order`), then the
/// sentinel pair (`u32::MAX`, `order.len()`) that ends the last run.
fn push_segments(ids: &[u32], order: &[u32], out: &mut Vec<u32>) {
    out.extend_from_slice(order);
    let mut previous = None;
    for (k, &p) in order.iter().enumerate() {
        let id = ids[p as usize];
        if previous != Some(id) {
            out.push(id);
            out.push(u32::try_from(k).expect(ID_COUNT_FITS));
            previous = Some(id);
        }
    }
    out.push(u32::MAX);
    out.push(u32::try_from(order.len()).expect(ID_COUNT_FITS));
}

/// Lays `groups` workgroups out as rows of at most `max` along x, folded into y (the
/// pointwise shaders recompute the flat index as `(wg.y·nwg.x + wg.x)·256 + lid.x`).
/// `None` when even the folded grid exceeds `max` along y.
fn fold_groups(groups: u64, max: u32) -> Option<(u32, u32)> {
    let x = groups.clamp(1, u64::from(max));
    let y = groups.div_ceil(x);
    let y = u32::try_from(y).ok().filter(|&y| y <= max)?;
    Some((x as u32, y))
}

fn to_u32(what: &'static str, v: usize) -> Result<u32, WgpuError> {
    u32::try_from(v).map_err(|_| WgpuError::Device {
        what,
        kind: BackendErrorKind::Limit,
        message: format!("{v} does not fit the shader's 32-bit indices"),
    })
}

/// Elements a buffer needs to hold `count` elements from `off` (none when `count` is 0).
fn region(off: usize, count: usize) -> usize {
    if count == 0 { 0 } else { off + count }
}

/// Checks that `buf` holds at least `needed` elements.
fn need(op: &'static str, buf: &WgpuBuf, needed: usize) -> Result<(), NumError> {
    if buf.len < needed {
        return Err(NumError::BufferTooSmall {
            op,
            len: buf.len,
            needed,
        });
    }
    Ok(())
}

impl Backend for WgpuBackend {
    type Elem = f32;
    type Buf = WgpuBuf;

    fn name(&self) -> String {
        format!("wgpu {}", self.adapter())
    }

    fn upload(&self, data: &[f32]) -> Result<WgpuBuf, NumError> {
        self.check_len(data.len())?;
        let zero = [0.0f32];
        let contents: &[f32] = if data.is_empty() { &zero } else { data };
        let buffer = self.ctx.scoped("upload", || {
            self.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("sclstm buffer"),
                    contents: bytemuck::cast_slice(contents),
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                })
        })?;
        Ok(WgpuBuf::new(buffer, data.len(), &self.dropped))
    }

    fn write(&self, buf: &mut WgpuBuf, data: &[f32]) -> Result<(), NumError> {
        need("write", buf, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        // A staging copy recorded in the pending encoder keeps program order with the
        // kernels recorded before and after (queue.write_buffer would jump ahead of them).
        let size = wgpu::BufferSize::new(4 * data.len() as u64)
            .expect("internal: non-empty write has a non-zero size");
        let mut pending = self.lock();
        Self::end_pass(&mut pending);
        let pending = &mut *pending;
        let encoder = self.encoder(&mut pending.encoder);
        let belt = &mut pending.belt;
        self.ctx.scoped("write", || {
            let mut view = belt.write_buffer(encoder, &buf.buffer, 0, size);
            view.copy_from_slice(bytemuck::cast_slice(data));
        })?;
        Ok(())
    }

    fn download(&self, buf: &WgpuBuf) -> Result<Vec<f32>, NumError> {
        Ok(self.read_back(buf, buf.len, |all| all.to_vec())?)
    }

    fn download_parts(&self, buf: &WgpuBuf, sizes: &[usize]) -> Result<Vec<Vec<f32>>, NumError> {
        let total = sizes.iter().sum();
        need("download_parts", buf, total)?;
        Ok(self.read_back(buf, total, |all| {
            let mut rest = all;
            sizes
                .iter()
                .map(|&n| {
                    let (part, tail) = rest.split_at(n);
                    rest = tail;
                    part.to_vec()
                })
                .collect()
        })?)
    }

    fn zeros(&self, len: usize) -> Result<WgpuBuf, NumError> {
        let bytes = self.check_len(len)?;
        // WebGPU zero-initializes new buffers.
        let buffer = self.ctx.scoped("zeros", || {
            self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("sclstm buffer"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        Ok(WgpuBuf::new(buffer, len, &self.dropped))
    }

    fn fill_zero(&self, buf: &mut WgpuBuf) -> Result<(), NumError> {
        self.record(|encoder| encoder.clear_buffer(&buf.buffer, 0, None));
        Ok(())
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: &WgpuBuf,
        b: &WgpuBuf,
        bias: Option<&WgpuBuf>,
        c: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        if g.b_strips {
            // `strip_weights` is false here: the layers never write strips for this backend.
            return Err(NumError::ShapeMismatch {
                op: "gemm (the wgpu shaders read no strip-layout B)",
                lhs: vec![g.k, g.n],
                rhs: vec![usize::from(g.b_strips)],
            });
        }
        need("gemm (a)", a, region(g.a_off, g.m * g.k))?;
        need("gemm (b)", b, region(g.b_off, g.k * g.n))?;
        need("gemm (c)", c, region(g.c_off, g.m * g.n))?;
        if let Some(bias) = bias {
            need("gemm (bias)", bias, g.n)?;
        }
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let dims = GemmDims {
            m: to_u32("gemm m", g.m)?,
            n: to_u32("gemm n", g.n)?,
            k: to_u32("gemm k", g.k)?,
            a_off: to_u32("gemm a_off", g.a_off)?,
            b_off: to_u32("gemm b_off", g.b_off)?,
            c_off: to_u32("gemm c_off", g.c_off)?,
            trans_a: u32::from(g.trans_a),
            trans_b: u32::from(g.trans_b),
            accumulate: u32::from(g.accumulate),
            has_bias: u32::from(bias.is_some()),
            pad0: 0,
            pad1: 0,
        };
        // Small m (the per-step products, m = batch): 16-row tiles instead of 64.
        let (kernel, (tile_m, tile_n)) = if g.m <= SMALL_M_MAX {
            (Kernel::GemmSmallM, SMALL_M_TILE)
        } else {
            (Kernel::Gemm, (GEMM_TILE, GEMM_TILE))
        };
        let max = self.device().limits().max_compute_workgroups_per_dimension;
        let gx = (g.n as u64).div_ceil(tile_n);
        let gy = (g.m as u64).div_ceil(tile_m);
        if gx.max(gy) > u64::from(max) {
            return Err(WgpuError::TooManyWorkgroups {
                op: "gemm",
                groups: gx.max(gy),
                max,
            }
            .into());
        }
        let bias = bias.unwrap_or(&self.dummy);
        self.dispatch(
            kernel,
            bytemuck::bytes_of(&dims),
            &[a, b, bias, c],
            (gx as u32, gy as u32),
        )?;
        Ok(())
    }

    fn lstm_cell_fwd(
        &self,
        s: CellStep,
        gates: &mut WgpuBuf,
        c: &mut WgpuBuf,
        h: &mut WgpuBuf,
        tanh_c: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        let op = "lstm_cell_fwd";
        s.check(op)?;
        let hd = s.hidden;
        need(op, gates, s.needs(s.step, 4 * hd))?;
        // `c` is read at `prev` and written at `next`, which lies past it.
        need(op, c, s.needs(s.next, hd))?;
        need(op, h, s.needs(s.next, hd))?;
        need(op, tanh_c, s.needs(s.step, hd))?;
        self.dispatch_cell(Kernel::LstmCellFwd, &s, &[&*gates, &*c, &*h, &*tanh_c])?;
        Ok(())
    }

    fn lstm_cell_bwd(
        &self,
        s: CellStep,
        gates: &WgpuBuf,
        c: &WgpuBuf,
        tanh_c: &WgpuBuf,
        d_h: &WgpuBuf,
        d_c: &mut WgpuBuf,
        d_gates: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        let op = "lstm_cell_bwd";
        s.check(op)?;
        let hd = s.hidden;
        need(op, gates, s.needs(s.step, 4 * hd))?;
        need(op, c, s.needs(s.prev, hd))?;
        need(op, tanh_c, s.needs(s.step, hd))?;
        need(op, d_h, s.needs(s.next, hd))?;
        // `d_c` is read at `next` and added to at `prev`, which lies before it.
        need(op, d_c, s.needs(s.next, hd))?;
        need(op, d_gates, s.needs(s.step, 4 * hd))?;
        self.dispatch_cell(
            Kernel::LstmCellBwd,
            &s,
            &[gates, c, tanh_c, d_h, &*d_c, &*d_gates],
        )?;
        Ok(())
    }

    fn task_gate_fwd(
        &self,
        s: CellStep,
        o_k: &mut WgpuBuf,
        q_k: &mut WgpuBuf,
        tanh_c: &WgpuBuf,
    ) -> Result<(), NumError> {
        let op = "task_gate_fwd";
        s.check(op)?;
        let hd = s.hidden;
        need(op, o_k, s.needs(s.step, hd))?;
        need(op, q_k, s.needs(s.next, hd))?;
        need(op, tanh_c, s.needs(s.step, hd))?;
        self.dispatch_cell(Kernel::TaskGateFwd, &s, &[&*o_k, &*q_k, tanh_c])?;
        Ok(())
    }

    fn task_gate_bwd(
        &self,
        s: CellStep,
        o_k: &WgpuBuf,
        tanh_c: &WgpuBuf,
        d_q_k: &WgpuBuf,
        d_o_k: &mut WgpuBuf,
        d_c: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        let op = "task_gate_bwd";
        s.check(op)?;
        let hd = s.hidden;
        need(op, o_k, s.needs(s.step, hd))?;
        need(op, tanh_c, s.needs(s.step, hd))?;
        need(op, d_q_k, s.needs(s.next, hd))?;
        need(op, d_o_k, s.needs(s.step, hd))?;
        need(op, d_c, s.needs(s.next, hd))?;
        self.dispatch_cell(
            Kernel::TaskGateBwd,
            &s,
            &[o_k, tanh_c, d_q_k, &*d_o_k, &*d_c],
        )?;
        Ok(())
    }

    fn gather_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        table: &WgpuBuf,
        dense: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        r.check("gather_rows", ids, table.len, dense.len)?;
        if ids.is_empty() || r.width == 0 {
            return Ok(());
        }
        self.record_rows(RowDir::Gather, r, ids, table, dense)?;
        Ok(())
    }

    fn scatter_add_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        dense: &WgpuBuf,
        table: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        r.check("scatter_add_rows", ids, table.len, dense.len)?;
        if ids.is_empty() || r.width == 0 {
            return Ok(());
        }
        self.record_rows(RowDir::ScatterAdd, r, ids, dense, table)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), NumError> {
        self.flush()?;
        self.wait()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{fold_groups, push_segments, segment_words, sort_positions};

    #[test]
    fn scatter_lists_group_positions_by_id_in_position_order() {
        let ids = [2u32, 0, 2, 3, 0, 2];
        let mut order = vec![99; 2]; // stale contents are replaced
        let segments = sort_positions(&ids, &mut order);
        assert_eq!(order, [1, 4, 0, 2, 5, 3]);
        assert_eq!(segments, 3);
        let mut out = vec![7]; // appended after what is already there
        push_segments(&ids, &order, &mut out);
        assert_eq!(out, [7, 1, 4, 0, 2, 5, 3, 0, 0, 2, 2, 3, 5, u32::MAX, 6]);
        assert_eq!(out.len() - 1, segment_words(ids.len(), segments));
    }

    #[test]
    fn scatter_lists_of_one_id_and_of_a_permutation() {
        let mut order = Vec::new();
        assert_eq!(sort_positions(&[5, 5, 5], &mut order), 1);
        let mut out = Vec::new();
        push_segments(&[5, 5, 5], &order, &mut out);
        assert_eq!(out, [0, 1, 2, 5, 0, u32::MAX, 3]);
        // A permutation: one segment per position, positions ordered by id.
        let perm = [2u32, 0, 1];
        assert_eq!(sort_positions(&perm, &mut order), 3);
        assert_eq!(order, [1, 2, 0]);
        assert_eq!(sort_positions(&[], &mut order), 0);
        assert!(order.is_empty());
    }

    #[test]
    fn fold_groups_covers_every_workgroup_once() {
        assert_eq!(fold_groups(1, 65535), Some((1, 1)));
        assert_eq!(fold_groups(65535, 65535), Some((65535, 1)));
        assert_eq!(fold_groups(65536, 65535), Some((65535, 2)));
        // With a small limit: 10 groups in rows of 4 -> 3 rows; the shader's bound check
        // drops the 2 surplus workgroups of the last row.
        assert_eq!(fold_groups(10, 4), Some((4, 3)));
        assert_eq!(fold_groups(16, 4), Some((4, 4)));
        assert_eq!(fold_groups(17, 4), None);
    }
}
