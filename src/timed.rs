//! A [`Backend`] wrapper that times every call it forwards, grouped by kind: the
//! products by shape class, every other kernel by name. `sclstm bench --in-situ` runs the
//! training steps and the inference through it to show what each kind of product reaches
//! inside a real step (weights and activations evicted by the rest of the step, ragged
//! rows), next to the rates the same kinds reach timed on their own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sclstm_core::{Backend, CellStep, Gemm, NumError, Packed, RowCopy};
use serde::Serialize;

/// Which role a product plays, read from its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// At most the batch's rows, added to `C`: a per-step recurrent product.
    PerStep,
    /// More rows than a batch: a product over all tokens (input projection, `d_x`).
    AllTokens,
    /// `A` stored transposed: a weight gradient summed over all tokens (`k`).
    OverTokens,
    /// One row written over `C`: a bias gradient (a ones vector times the gate
    /// gradients).
    OneRow,
}

/// What a group of calls is: a product class or another kernel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallKind {
    /// Products of one role whose fixed sizes agree (`k × n`, or `m × n` for the roles
    /// whose `k` is the token count).
    Product {
        /// The role.
        role: Role,
        /// The two sizes that do not depend on the batch.
        fixed: (usize, usize),
        /// `B` stored transposed.
        trans_b: bool,
        /// `B` packed (bf16 pairs or int8 quads), or f32.
        packed: Option<Packed>,
    },
    /// Any other backend call, by method name.
    Other(&'static str),
}

/// Totals of one kind of call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallTotals {
    /// Calls made.
    pub calls: u64,
    /// Seconds inside the calls, summed over the threads that made them.
    pub seconds: f64,
    /// Floating-point operations (products only).
    pub flops: u64,
    /// Rows of `C`, summed (products only).
    pub rows: u64,
    /// Inner dimensions, summed (products only).
    pub inner: u64,
}

/// One row of [`TimedBackend::take`]: a kind of call and its totals.
#[derive(Debug, Clone, Serialize)]
pub struct CallGroup {
    /// What the calls are, e.g. `per-step m ≤ 10 · 300×1200` or `lstm_cell_fwd`.
    pub kind: String,
    /// Their totals.
    pub totals: CallTotals,
}

/// The joins the layers made (each runs two sides, e.g. a layer's two directions, on two
/// threads where the backend has them), summed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JoinTotals {
    /// Joins made.
    pub calls: u64,
    /// Seconds from each join's start to its end.
    pub wall_seconds: f64,
    /// Thread-seconds inside the joins with one side done or not yet started: twice the
    /// wall time less the two sides' durations.
    pub waiting_seconds: f64,
    /// The part of the waiting that unequal sides explain: the sides' differences.
    pub unequal_seconds: f64,
    /// Seconds in backend calls made outside every join's sides (by the calling thread
    /// alone).
    pub outside_call_seconds: f64,
}

thread_local! {
    /// Whether this thread is running a side of a join.
    static IN_SIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Whether this thread is inside a timed call (a call made from another call's
    /// closure, e.g. a weight's two copies written together, counts to the outer one).
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What [`TimedBackend::take`] returns: every call by kind, and the joins.
#[derive(Debug, Clone, Default)]
pub struct InSitu {
    /// Each kind of call and its totals, largest time first.
    pub calls: Vec<CallGroup>,
    /// The joins.
    pub joins: JoinTotals,
}

/// Forwards every call to `inner` and adds its duration to the totals of its kind.
pub struct TimedBackend<B: Backend> {
    inner: Arc<B>,
    /// Products with at most this many rows that add to `C` count as per-step products
    /// (the batch size of the phase being timed).
    per_step_rows: AtomicUsize,
    totals: Mutex<BTreeMap<CallKind, CallTotals>>,
    joins: Mutex<JoinTotals>,
}

impl<B: Backend> TimedBackend<B> {
    /// Wraps `inner`; products of at most `per_step_rows` rows that add to `C` are the
    /// per-step class.
    pub fn new(inner: Arc<B>, per_step_rows: usize) -> Self {
        TimedBackend {
            inner,
            per_step_rows: AtomicUsize::new(per_step_rows),
            totals: Mutex::new(BTreeMap::new()),
            joins: Mutex::new(JoinTotals::default()),
        }
    }

    /// The totals since the last `take` (or since creation), largest time first, and the
    /// joins; clears them, and counts products of at most `per_step_rows` rows as
    /// per-step from now on (the next phase's batch size).
    pub fn take(&self, per_step_rows: usize) -> InSitu {
        let totals = std::mem::take(&mut *self.lock());
        let joins = std::mem::take(&mut *self.lock_joins());
        let mut groups: Vec<CallGroup> = totals
            .into_iter()
            .map(|(kind, totals)| CallGroup {
                kind: self.describe(&kind, &totals),
                totals,
            })
            .collect();
        groups.sort_by(|a, b| b.totals.seconds.total_cmp(&a.totals.seconds));
        self.per_step_rows.store(per_step_rows, Ordering::Relaxed);
        InSitu {
            calls: groups,
            joins,
        }
    }

    fn describe(&self, kind: &CallKind, t: &CallTotals) -> String {
        let (role, (a, b), trans_b, packed) = match *kind {
            CallKind::Product {
                role,
                fixed,
                trans_b,
                packed,
            } => (role, fixed, trans_b, packed),
            CallKind::Other(name) => return name.to_string(),
        };
        let calls = t.calls.max(1) as f64;
        let (m, k) = (t.rows as f64 / calls, t.inner as f64 / calls);
        let layout = match (trans_b, packed) {
            (_, Some(p)) => format!(", B in {}", p.name()),
            (true, _) => ", B stored transposed".to_string(),
            _ => String::new(),
        };
        match role {
            Role::PerStep => format!(
                "per-step, m ≤ {} (mean {m:.1}) · {a}×{b}{layout}",
                self.per_step_rows.load(Ordering::Relaxed)
            ),
            Role::AllTokens => format!("all tokens, m = {m:.0} (mean) · {a}×{b}{layout}"),
            Role::OverTokens => {
                format!("weight gradient, ({a}×k)ᵀ · k×{b} over k = {k:.0} tokens (mean){layout}")
            }
            Role::OneRow => format!("bias gradient, 1×k · k×{b} over k = {k:.0} tokens (mean)"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CallKind, CallTotals>> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_joins(&self) -> std::sync::MutexGuard<'_, JoinTotals> {
        self.joins.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn timed<T>(&self, kind: CallKind, g: Option<&Gemm>, call: impl FnOnce() -> T) -> T {
        if IN_CALL.with(|c| c.replace(true)) {
            return call();
        }
        let start = Instant::now();
        let out = call();
        IN_CALL.with(|c| c.set(false));
        let seconds = start.elapsed().as_secs_f64();
        if !IN_SIDE.with(|c| c.get()) {
            self.lock_joins().outside_call_seconds += seconds;
        }
        let mut totals = self.lock();
        let t = totals.entry(kind).or_default();
        t.calls += 1;
        t.seconds += seconds;
        if let Some(g) = g {
            t.flops += g.flops();
            t.rows += g.m as u64;
            t.inner += g.k as u64;
        }
        out
    }

    fn product<T>(&self, g: &Gemm, packed: Option<Packed>, call: impl FnOnce() -> T) -> T {
        let (role, fixed) = if g.trans_a {
            (Role::OverTokens, (g.m, g.n))
        } else if g.m == 1 && !g.accumulate {
            (Role::OneRow, (1, g.n))
        } else if g.m <= self.per_step_rows.load(Ordering::Relaxed) && g.accumulate {
            (Role::PerStep, (g.k, g.n))
        } else {
            (Role::AllTokens, (g.k, g.n))
        };
        let kind = CallKind::Product {
            role,
            fixed,
            trans_b: g.trans_b,
            packed,
        };
        self.timed(kind, Some(g), call)
    }

    fn other<T>(&self, name: &'static str, call: impl FnOnce() -> T) -> T {
        self.timed(CallKind::Other(name), None, call)
    }
}

impl<B: Backend> Backend for TimedBackend<B> {
    type Elem = B::Elem;
    type Buf = B::Buf;

    fn name(&self) -> String {
        self.inner.name()
    }

    fn upload(&self, data: &[B::Elem]) -> Result<B::Buf, NumError> {
        self.other("upload", || self.inner.upload(data))
    }

    fn write(&self, buf: &mut B::Buf, data: &[B::Elem]) -> Result<(), NumError> {
        self.other("write", || self.inner.write(buf, data))
    }

    fn write_with(
        &self,
        buf: &mut B::Buf,
        len: usize,
        fill: &mut dyn FnMut(&mut [B::Elem]),
    ) -> Result<(), NumError> {
        self.other("write_with (weight copies)", || {
            self.inner.write_with(buf, len, fill)
        })
    }

    fn download(&self, buf: &B::Buf) -> Result<Vec<B::Elem>, NumError> {
        self.other("download", || self.inner.download(buf))
    }

    fn download_parts(&self, buf: &B::Buf, sizes: &[usize]) -> Result<Vec<Vec<B::Elem>>, NumError> {
        self.other("download_parts", || self.inner.download_parts(buf, sizes))
    }

    fn host_buffers(&self) -> bool {
        self.inner.host_buffers()
    }

    fn download_owned(&self, buf: B::Buf, len: usize) -> Result<Vec<B::Elem>, NumError> {
        self.other("download_owned", || self.inner.download_owned(buf, len))
    }

    fn zeros(&self, len: usize) -> Result<B::Buf, NumError> {
        self.other("zeros", || self.inner.zeros(len))
    }

    fn fill_zero(&self, buf: &mut B::Buf) -> Result<(), NumError> {
        self.other("fill_zero", || self.inner.fill_zero(buf))
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: &B::Buf,
        b: &B::Buf,
        bias: Option<&B::Buf>,
        c: &mut B::Buf,
    ) -> Result<(), NumError> {
        self.product(g, None, || self.inner.gemm(g, a, b, bias, c))
    }

    fn lstm_cell_fwd(
        &self,
        s: CellStep,
        gates: &mut B::Buf,
        c: &mut B::Buf,
        h: &mut B::Buf,
        tanh_c: &mut B::Buf,
    ) -> Result<(), NumError> {
        self.other("lstm_cell_fwd", || {
            self.inner.lstm_cell_fwd(s, gates, c, h, tanh_c)
        })
    }

    fn lstm_cell_bwd(
        &self,
        s: CellStep,
        gates: &B::Buf,
        c: &B::Buf,
        tanh_c: &B::Buf,
        d_h: &B::Buf,
        d_c: &mut B::Buf,
        d_gates: &mut B::Buf,
    ) -> Result<(), NumError> {
        self.other("lstm_cell_bwd", || {
            self.inner
                .lstm_cell_bwd(s, gates, c, tanh_c, d_h, d_c, d_gates)
        })
    }

    fn task_gate_fwd(
        &self,
        s: CellStep,
        o_k: &mut B::Buf,
        q_k: &mut B::Buf,
        tanh_c: &B::Buf,
    ) -> Result<(), NumError> {
        self.other("task_gate_fwd", || {
            self.inner.task_gate_fwd(s, o_k, q_k, tanh_c)
        })
    }

    fn task_gate_bwd(
        &self,
        s: CellStep,
        o_k: &B::Buf,
        tanh_c: &B::Buf,
        d_q_k: &B::Buf,
        d_o_k: &mut B::Buf,
        d_c: &mut B::Buf,
    ) -> Result<(), NumError> {
        self.other("task_gate_bwd", || {
            self.inner.task_gate_bwd(s, o_k, tanh_c, d_q_k, d_o_k, d_c)
        })
    }

    fn gather_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        table: &B::Buf,
        dense: &mut B::Buf,
    ) -> Result<(), NumError> {
        self.other("gather_rows", || {
            self.inner.gather_rows(r, ids, table, dense)
        })
    }

    fn scatter_add_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        dense: &B::Buf,
        table: &mut B::Buf,
    ) -> Result<(), NumError> {
        self.other("scatter_add_rows", || {
            self.inner.scatter_add_rows(r, ids, dense, table)
        })
    }

    fn packed_products(&self, p: Packed) -> Result<(), NumError> {
        self.inner.packed_products(p)
    }

    fn write_packed(
        &self,
        p: Packed,
        buf: &mut B::Buf,
        k: usize,
        n: usize,
        strips: bool,
        fill: &mut dyn FnMut(&mut [B::Elem]),
    ) -> Result<(), NumError> {
        self.other("write_packed (weight copies)", || {
            self.inner.write_packed(p, buf, k, n, strips, fill)
        })
    }

    fn gemm_packed(
        &self,
        p: Packed,
        g: &Gemm,
        a: &B::Buf,
        b: &B::Buf,
        bias: Option<&B::Buf>,
        c: &mut B::Buf,
    ) -> Result<(), NumError> {
        self.product(g, Some(p), || self.inner.gemm_packed(p, g, a, b, bias, c))
    }

    fn strip_weights(&self) -> bool {
        self.inner.strip_weights()
    }

    fn sync(&self) -> Result<(), NumError> {
        self.other("sync", || self.inner.sync())
    }

    fn concurrent(&self) -> bool {
        self.inner.concurrent()
    }

    fn join(&self, a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send)) {
        let start = Instant::now();
        let (mut side_a, mut side_b) = (0.0, 0.0);
        let timed_side = |side: &mut (dyn FnMut() + Send), seconds: &mut f64| {
            let start = Instant::now();
            let was = IN_SIDE.with(|c| c.replace(true));
            side();
            IN_SIDE.with(|c| c.set(was));
            *seconds = start.elapsed().as_secs_f64();
        };
        self.inner
            .join(&mut || timed_side(a, &mut side_a), &mut || {
                timed_side(b, &mut side_b)
            });
        let wall = start.elapsed().as_secs_f64();
        let mut joins = self.lock_joins();
        joins.calls += 1;
        joins.wall_seconds += wall;
        joins.waiting_seconds += (2.0 * wall - side_a - side_b).max(0.0);
        joins.unequal_seconds += (side_a - side_b).abs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sclstm_cpu::CpuBackend;

    /// The one group whose kind starts with `prefix`.
    fn group<'a>(groups: &'a [CallGroup], prefix: &str) -> &'a CallGroup {
        let mut found = groups.iter().filter(|g| g.kind.starts_with(prefix));
        let g = found.next().unwrap_or_else(|| panic!("no {prefix} group"));
        assert!(found.next().is_none(), "one {prefix} group");
        g
    }

    #[test]
    fn forwards_what_the_backend_says_and_counts_each_kind() -> Result<(), NumError> {
        let inner = Arc::new(CpuBackend::<f32>::new(1)?);
        let timed = TimedBackend::new(inner.clone(), 10);
        // The answers that steer the layers must be the wrapped backend's, not defaults.
        assert_eq!(timed.strip_weights(), inner.strip_weights());
        assert_eq!(timed.concurrent(), inner.concurrent());
        for p in [Packed::Bf16, Packed::Int8] {
            assert_eq!(
                timed.packed_products(p).is_ok(),
                inner.packed_products(p).is_ok()
            );
        }

        let (a, b) = (timed.upload(&[1.0; 6])?, timed.upload(&[2.0; 12])?);
        let mut c = timed.zeros(8)?;
        let step = Gemm {
            accumulate: true,
            ..Gemm::new(2, 4, 3)
        };
        timed.gemm(&step, &a, &b, None, &mut c)?;
        timed.gemm(&step, &a, &b, None, &mut c)?;
        assert_eq!(timed.download(&c)?, vec![12.0; 8]);
        let groups = timed.take(10).calls;
        let product = group(&groups, "per-step");
        assert_eq!(product.totals.calls, 2);
        assert_eq!(product.totals.flops, 2 * step.flops());
        assert_eq!(product.totals.rows, 4);
        for name in ["upload", "zeros", "download"] {
            assert!(groups.iter().any(|g| g.kind == name), "{name} counted");
        }
        assert!(timed.take(10).calls.is_empty(), "take clears the totals");

        // A call made inside another's closure counts to the outer call only.
        let (mut outer, mut inner_buf) = (timed.zeros(4)?, timed.zeros(4)?);
        timed.take(10);
        let mut inner_written = Ok(());
        timed.write_with(&mut outer, 4, &mut |dst| {
            dst.fill(1.0);
            inner_written = timed.write_with(&mut inner_buf, 4, &mut |d| d.fill(2.0));
        })?;
        inner_written?;
        assert_eq!(timed.download(&inner_buf)?, vec![2.0; 4]);
        let groups = timed.take(10).calls;
        let copies = group(&groups, "write_with");
        assert_eq!(copies.totals.calls, 1, "the nested call is not counted");
        Ok(())
    }

    #[test]
    fn a_join_counts_its_wall_time_and_the_waiting_of_its_shorter_side() -> Result<(), NumError> {
        let inner = Arc::new(CpuBackend::<f32>::new(2)?);
        let timed = TimedBackend::new(inner, 10);
        let (mut a_ran, mut b_ran) = (false, false);
        let nap = std::time::Duration::from_millis(30);
        timed.join(
            &mut || {
                std::thread::sleep(nap);
                a_ran = true;
            },
            &mut || b_ran = timed.zeros(4).is_ok(),
        );
        assert!(a_ran && b_ran, "both sides run");
        let joins = timed.take(10).joins;
        assert_eq!(joins.calls, 1);
        assert_eq!(joins.outside_call_seconds, 0.0, "a side's call is inside");
        // The join lasts at least its longer side; the shorter side's thread waits for it.
        assert!(joins.wall_seconds >= nap.as_secs_f64(), "{joins:?}");
        assert!(
            joins.unequal_seconds <= joins.waiting_seconds + 1e-9,
            "{joins:?}"
        );
        assert!(
            joins.waiting_seconds <= 2.0 * joins.wall_seconds,
            "{joins:?}"
        );
        assert!(joins.unequal_seconds > 0.0, "{joins:?}");
        assert_eq!(timed.take(10).joins.calls, 0, "take clears the joins");
        // A call outside a join (copying 4 MB takes far more than a clock tick).
        timed.upload(&vec![1.0; 1 << 20])?;
        assert!(timed.take(10).joins.outside_call_seconds > 0.0);
        Ok(())
    }
}
