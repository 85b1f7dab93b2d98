//! CPU backend for sclstm: naive reference kernels (the spec) and fast kernels behind
//! [`sclstm_core::Backend`]: unpacked AVX-512 / AVX2 register-tile gemm kernels chosen
//! at run time, matrixmultiply's packed microkernels where they do not apply, rayon
//! across the output, fused AVX-512 / AVX2 cell kernels ([`cell`]) and row gather /
//! scatter-add ([`rows`]), and packed products for inference ([`packed`]): bf16 on
//! AVX512_BF16 ([`bf16`]), int8 on AVX512_VNNI, AVX-VNNI or AVX2 ([`int8`]).
//!
//! Buffers are plain `Vec<R>`; `R` is `f32` for training and `f64` for gradient checks.
//!
//! ```
//! use sclstm_core::{Backend, Gemm};
//! use sclstm_cpu::CpuBackend;
//!
//! let cpu = CpuBackend::<f64>::new(1).unwrap();
//! let a = cpu.upload(&[1.0, 2.0, 3.0, 4.0]).unwrap(); // 2 × 2
//! let b = cpu.upload(&[1.0, 0.0, 0.0, 1.0]).unwrap(); // identity
//! let mut c = cpu.zeros(4).unwrap();
//! cpu.gemm(&Gemm::new(2, 2, 2), &a, &b, None, &mut c).unwrap();
//! assert_eq!(cpu.download(&c).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

pub mod amx;
pub mod bf16;
pub mod cell;
pub mod gemm;
pub mod int8;
pub mod kernels;
pub mod packed;
pub mod rows;
mod small_m;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, Weak};

use rayon::ThreadPool;
use sclstm_core::{Backend, CellStep, Gemm, NumError, Packed, Real, RowCopy};

/// `threads`, with 0 meaning one per core.
fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        threads
    }
}

/// Stack of each pool thread: the main thread's usual 8 MiB, since [`CpuBackend::run`]
/// runs whole commands there.
const POOL_STACK_BYTES: usize = 8 << 20;

/// The process's rayon pool of `threads` threads (0 = one per core; `None` for one
/// thread), created on first use and shared by every caller asking for the same number
/// while any of them holds it: the CPU backend's products and joins and the host's
/// products and Adam then run on one set of threads, one per core, rather than two
/// pools taking turns on the same cores.
///
/// # Errors
/// [`NumError::Backend`] if the pool cannot be created.
pub fn shared_pool(threads: usize) -> Result<Option<Arc<ThreadPool>>, NumError> {
    static POOLS: Mutex<Vec<(usize, Weak<ThreadPool>)>> = Mutex::new(Vec::new());
    let threads = resolve_threads(threads);
    if threads <= 1 {
        return Ok(None);
    }
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|(_, pool)| pool.strong_count() > 0);
    if let Some(pool) = pools
        .iter()
        .find(|(n, _)| *n == threads)
        .and_then(|(_, pool)| pool.upgrade())
    {
        return Ok(Some(pool));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("sclstm-{i}"))
        .stack_size(POOL_STACK_BYTES)
        .build()
        .map_err(|e| NumError::Backend {
            backend: "cpu".into(),
            kind: sclstm_core::BackendErrorKind::Unavailable,
            message: e.to_string(),
        })?;
    let pool = Arc::new(pool);
    pools.push((threads, Arc::downgrade(&pool)));
    Ok(Some(pool))
}

/// The CPU backend: fast gemm on the process's rayon pool of `threads` threads
/// ([`shared_pool`]).
///
/// Cloning is cheap (the pool is shared).
#[derive(Debug, Clone)]
pub struct CpuBackend<R> {
    threads: usize,
    /// `None` when `threads == 1`: everything then runs on the calling thread.
    pool: Option<Arc<ThreadPool>>,
    _elem: PhantomData<fn() -> R>,
}

impl<R: Real> CpuBackend<R> {
    /// A backend using `threads` threads for large products (`0` means one per core).
    ///
    /// # Errors
    /// [`NumError::Backend`] if the thread pool cannot be created, or if
    /// [`kernels::KERNELS_ENV`] names a kernel set this CPU does not run, or
    /// [`amx::AMX_ENV`] holds an unknown setting.
    pub fn new(threads: usize) -> Result<Self, NumError> {
        kernels::Kernels::selected()
            .and_then(|_| amx::allowed())
            .map_err(|message| NumError::Backend {
                backend: "cpu".into(),
                kind: sclstm_core::BackendErrorKind::Unavailable,
                message,
            })?;
        let threads = resolve_threads(threads);
        Ok(CpuBackend {
            threads,
            pool: shared_pool(threads)?,
            _elem: PhantomData,
        })
    }

    /// Number of threads this backend uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The backend's thread pool (`None` when single-threaded), for callers that want
    /// to run independent work (e.g. the two directions of a layer) on the same threads.
    pub fn pool(&self) -> Option<&ThreadPool> {
        self.pool.as_deref()
    }

    /// Runs `f` on one of the backend's threads (on the calling thread when it has no
    /// pool) and returns its result. The layers' joins and the parallel loops inside `f`
    /// then start on the pool's threads directly, instead of each handing its work from
    /// the calling thread to the pool and waiting to be woken when it is done.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.pool() {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Fast gemm on host slices (same contract as [`Backend::gemm`]).
    ///
    /// # Errors
    /// [`NumError::BufferTooSmall`] if an operand does not fit its slice.
    pub fn gemm_slices(
        &self,
        g: &Gemm,
        a: &[R],
        b: &[R],
        bias: Option<&[R]>,
        c: &mut [R],
    ) -> Result<(), NumError> {
        gemm::gemm_fast(g, a, b, bias, c, self.pool())
    }
}

impl<R: Real> Backend for CpuBackend<R> {
    type Elem = R;
    type Buf = Vec<R>;

    fn name(&self) -> String {
        format!(
            "cpu ({} thread{}, {}, {} kernels)",
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            R::NAME,
            kernels::Kernels::active().name()
        )
    }

    fn upload(&self, data: &[R]) -> Result<Vec<R>, NumError> {
        Ok(data.to_vec())
    }

    fn write(&self, buf: &mut Vec<R>, data: &[R]) -> Result<(), NumError> {
        if buf.len() < data.len() {
            return Err(NumError::BufferTooSmall {
                op: "write",
                len: buf.len(),
                needed: data.len(),
            });
        }
        buf[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn write_with(
        &self,
        buf: &mut Vec<R>,
        len: usize,
        fill: &mut dyn FnMut(&mut [R]),
    ) -> Result<(), NumError> {
        let Some(dst) = buf.get_mut(..len) else {
            return Err(NumError::BufferTooSmall {
                op: "write_with",
                len: buf.len(),
                needed: len,
            });
        };
        fill(dst);
        Ok(())
    }

    fn download(&self, buf: &Vec<R>) -> Result<Vec<R>, NumError> {
        Ok(buf.clone())
    }

    fn download_parts(&self, buf: &Vec<R>, sizes: &[usize]) -> Result<Vec<Vec<R>>, NumError> {
        let needed = sizes.iter().sum();
        if buf.len() < needed {
            return Err(NumError::BufferTooSmall {
                op: "download_parts",
                len: buf.len(),
                needed,
            });
        }
        let mut rest = &buf[..];
        Ok(sizes
            .iter()
            .map(|&n| {
                let (part, tail) = rest.split_at(n);
                rest = tail;
                part.to_vec()
            })
            .collect())
    }

    fn host_buffers(&self) -> bool {
        true
    }

    fn download_owned(&self, mut buf: Vec<R>, len: usize) -> Result<Vec<R>, NumError> {
        if buf.len() < len {
            return Err(NumError::BufferTooSmall {
                op: "download_owned",
                len: buf.len(),
                needed: len,
            });
        }
        buf.truncate(len);
        Ok(buf)
    }

    fn zeros(&self, len: usize) -> Result<Vec<R>, NumError> {
        Ok(vec![R::zero(); len])
    }

    fn fill_zero(&self, buf: &mut Vec<R>) -> Result<(), NumError> {
        buf.fill(R::zero());
        Ok(())
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: &Vec<R>,
        b: &Vec<R>,
        bias: Option<&Vec<R>>,
        c: &mut Vec<R>,
    ) -> Result<(), NumError> {
        self.gemm_slices(g, a, b, bias.map(Vec::as_slice), c)
    }

    fn lstm_cell_fwd(
        &self,
        s: CellStep,
        gates: &mut Vec<R>,
        c: &mut Vec<R>,
        h: &mut Vec<R>,
        tanh_c: &mut Vec<R>,
    ) -> Result<(), NumError> {
        cell::lstm_cell_fwd(s, gates, c, h, tanh_c)
    }

    fn lstm_cell_bwd(
        &self,
        s: CellStep,
        gates: &Vec<R>,
        c: &Vec<R>,
        tanh_c: &Vec<R>,
        d_h: &Vec<R>,
        d_c: &mut Vec<R>,
        d_gates: &mut Vec<R>,
    ) -> Result<(), NumError> {
        cell::lstm_cell_bwd(s, gates, c, tanh_c, d_h, d_c, d_gates)
    }

    fn task_gate_fwd(
        &self,
        s: CellStep,
        o_k: &mut Vec<R>,
        q_k: &mut Vec<R>,
        tanh_c: &Vec<R>,
    ) -> Result<(), NumError> {
        cell::task_gate_fwd(s, o_k, q_k, tanh_c)
    }

    fn task_gate_bwd(
        &self,
        s: CellStep,
        o_k: &Vec<R>,
        tanh_c: &Vec<R>,
        d_q_k: &Vec<R>,
        d_o_k: &mut Vec<R>,
        d_c: &mut Vec<R>,
    ) -> Result<(), NumError> {
        cell::task_gate_bwd(s, o_k, tanh_c, d_q_k, d_o_k, d_c)
    }

    fn gather_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        table: &Vec<R>,
        dense: &mut Vec<R>,
    ) -> Result<(), NumError> {
        rows::gather_rows(r, ids, table, dense)
    }

    fn scatter_add_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        dense: &Vec<R>,
        table: &mut Vec<R>,
    ) -> Result<(), NumError> {
        rows::scatter_add_rows(r, ids, dense, table)
    }

    fn packed_products(&self, p: Packed) -> Result<(), NumError> {
        let message = if R::NAME != "f32" {
            format!(
                "{} products need f32 buffers; this backend is {}",
                p.name(),
                R::NAME
            )
        } else {
            match packed::unavailable_reason(p) {
                None => return Ok(()),
                Some(reason) => reason,
            }
        };
        Err(NumError::Backend {
            backend: self.name(),
            kind: sclstm_core::BackendErrorKind::Unavailable,
            message,
        })
    }

    fn write_packed(
        &self,
        p: Packed,
        buf: &mut Vec<R>,
        k: usize,
        n: usize,
        strips: bool,
        fill: &mut dyn FnMut(&mut [R]),
    ) -> Result<(), NumError> {
        self.packed_products(p)?;
        let len = p.elems(k, n, strips);
        let Some(dst) = buf.get_mut(..len).and_then(R::as_f32_mut) else {
            return Err(NumError::BufferTooSmall {
                op: "write_packed",
                len: buf.len(),
                needed: len,
            });
        };
        let mut staged = vec![R::zero(); k * n];
        fill(&mut staged);
        let src = R::as_f32(&staged).expect("internal: packed_products() vouches for f32");
        packed::pack(p, k, n, strips, src, bytemuck::cast_slice_mut(dst))
    }

    fn gemm_packed(
        &self,
        p: Packed,
        g: &Gemm,
        a: &Vec<R>,
        b: &Vec<R>,
        bias: Option<&Vec<R>>,
        c: &mut Vec<R>,
    ) -> Result<(), NumError> {
        self.packed_products(p)?;
        fn f32s<R: Real>(v: &[R]) -> &[f32] {
            R::as_f32(v).expect("internal: packed_products() vouches for f32")
        }
        let bias = bias.map(|v| f32s(v));
        let (a, b) = (f32s(a), bytemuck::cast_slice(f32s(b)));
        let c = R::as_f32_mut(c).expect("internal: packed_products() vouches for f32");
        packed::gemm_fast(p, g, a, b, bias, c, self.pool())
    }

    /// Strips wherever a register-tile kernel runs (AVX-512 or AVX2): with the weights in
    /// strips the tiles serve every product with a weight operand, at any row count.
    fn strip_weights(&self) -> bool {
        small_m::Isa::detect().is_some()
    }

    fn sync(&self) -> Result<(), NumError> {
        Ok(())
    }

    fn concurrent(&self) -> bool {
        self.pool().is_some()
    }

    fn join(&self, a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send)) {
        match self.pool() {
            Some(pool) => {
                pool.install(|| rayon::join(a, b));
            }
            None => {
                a();
                b();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_gemm_roundtrip<B: Backend>(b: &B) -> Result<(), NumError> {
        let one = B::Elem::one();
        let two = one + one;
        // [1 2; 2 1] · [1; 1] + bias 1 = [4; 4]
        let a = b.upload(&[one, two, two, one])?;
        let x = b.upload(&[one, one])?;
        let bias = b.upload(&[one])?;
        let mut c = b.upload(&[B::Elem::nan(), B::Elem::nan()])?;
        b.gemm(&Gemm::new(2, 1, 2), &a, &x, Some(&bias), &mut c)?;
        b.sync()?;
        let four = two + two;
        assert_eq!(b.download(&c)?, vec![four, four]);
        let mut small = b.zeros(1)?;
        assert!(b.write(&mut small, &[one, one]).is_err());
        assert!(b.write_with(&mut small, 2, &mut |_| ()).is_err());
        // `write_with` fills exactly the first `len` elements and leaves the rest.
        let mut three = b.upload(&[two, two, two])?;
        b.write_with(&mut three, 2, &mut |dst| {
            assert_eq!(dst.len(), 2);
            dst.fill(one);
        })?;
        assert_eq!(b.download(&three)?, vec![one, one, two]);
        b.fill_zero(&mut c)?;
        assert_eq!(b.download(&c)?, vec![B::Elem::zero(); 2]);
        // `download_owned` returns the first `len` elements and refuses a longer `len`.
        assert_eq!(
            b.download_owned(b.upload(&[one, two, one])?, 2)?,
            vec![one, two]
        );
        assert!(b.download_owned(b.upload(&[one])?, 2).is_err());
        Ok(())
    }

    #[test]
    fn download_owned_hands_over_the_buffer_itself() -> Result<(), NumError> {
        let cpu = CpuBackend::<f32>::new(1)?;
        assert!(cpu.host_buffers());
        let buf = cpu.upload(&[1.0, 2.0, 3.0])?;
        let at = buf.as_ptr();
        let v = cpu.download_owned(buf, 2)?;
        assert_eq!((v.as_slice(), v.as_ptr()), (&[1.0, 2.0][..], at));
        Ok(())
    }

    use num_traits::{Float, One, Zero};

    #[test]
    fn backend_gemm_roundtrip_f32_two_threads() -> Result<(), NumError> {
        let cpu = CpuBackend::<f32>::new(2)?;
        assert_eq!(
            cpu.name(),
            format!(
                "cpu (2 threads, f32, {} kernels)",
                kernels::Kernels::active().name()
            )
        );
        backend_gemm_roundtrip(&cpu)
    }

    #[test]
    fn backend_gemm_roundtrip_f64_one_thread() -> Result<(), NumError> {
        let cpu = CpuBackend::<f64>::new(1)?;
        assert!(cpu.pool().is_none());
        backend_gemm_roundtrip(&cpu)
    }

    /// Runs a join whose sides each wait for the other at a barrier: it returns only if
    /// the two sides run at the same time. Returns what each side wrote.
    fn join_with_meeting_sides(backend: &CpuBackend<f32>) -> (i32, i32) {
        let barrier = std::sync::Barrier::new(2);
        let (mut a, mut b) = (0, 0);
        backend.join(
            &mut || {
                barrier.wait();
                a = 1;
            },
            &mut || {
                barrier.wait();
                b = 2;
            },
        );
        (a, b)
    }

    #[test]
    fn join_runs_both_sides_concurrently_only_with_a_pool() {
        let two = CpuBackend::<f32>::new(2).unwrap();
        assert!(two.concurrent());
        assert_eq!(join_with_meeting_sides(&two), (1, 2));
        let one = CpuBackend::<f32>::new(1).unwrap();
        assert!(!one.concurrent());
        let order = std::sync::Mutex::new(Vec::new());
        one.join(&mut || order.lock().unwrap().push('a'), &mut || {
            order.lock().unwrap().push('b')
        });
        assert_eq!(*order.lock().unwrap(), ['a', 'b'], "in turn, a first");
    }

    #[test]
    fn backends_and_host_share_one_pool_per_thread_count() {
        let (a, b) = (
            CpuBackend::<f32>::new(2).unwrap(),
            CpuBackend::<f64>::new(2).unwrap(),
        );
        let host = shared_pool(2).unwrap().expect("two threads have a pool");
        let same = |x: &ThreadPool, y: &ThreadPool| std::ptr::eq(x, y);
        assert!(same(a.pool().unwrap(), b.pool().unwrap()));
        assert!(same(a.pool().unwrap(), &host));
        let three = shared_pool(3).unwrap().expect("three threads have a pool");
        assert!(!same(&three, &host) && three.current_num_threads() == 3);
        assert!(
            shared_pool(1).unwrap().is_none(),
            "one thread runs on the caller"
        );
    }

    #[test]
    fn run_moves_the_work_onto_the_pool_and_joins_still_run_both_sides_at_once() {
        let two = CpuBackend::<f32>::new(2).unwrap();
        let (index, sides) = two.run(|| {
            let sides = join_with_meeting_sides(&two);
            (rayon::current_thread_index(), sides)
        });
        assert!(index.is_some(), "ran on a pool thread");
        assert_eq!(sides, (1, 2));
        let one = CpuBackend::<f32>::new(1).unwrap();
        let caller = std::thread::current().id();
        assert_eq!(one.run(|| std::thread::current().id()), caller);
    }
}
