//! Prints the GFLOP/s of the fast and naive CPU gemm at the engine's reference shapes
//! (recurrent 10×408·408×1200, batched input projection 300×408·408×1200, and 1024³)
//! on 1 and 2 threads, f32, in GFLOP/s: `fast` (the backend's gemm), `mm only`
//! (matrixmultiply without the small-m kernel, 1 thread) and `naive` (the reference).
//! Shapes marked `S` hold `B` in the strip layout the layers write for the register
//! tiles; `SCLSTM_KERNELS=avx2` measures the AVX2 tiles on an AVX-512 machine.
//! `--rows` instead prints, on one thread, the per-step products of a paper layer at every
//! row count a batch of 10–12 runs at (`m×300 · 300×1200` forward, `m×1200 · 1200×300`
//! backward, `B` in strips): the rows still running once a batch's shorter sentences end.
//!
//! ```text
//! cargo run --release -p sclstm-cpu --example gemm_gflops [-- --no-naive | --rows]
//! ```

use std::time::{Duration, Instant};

use sclstm_core::Gemm;
use sclstm_cpu::gemm::{gemm_fast, gemm_matrixmultiply, gemm_naive};

/// Mean seconds per call of the fastest of several short batches of calls within
/// `budget` (after one warm-up call): the minimum filters out time stolen by other
/// processes on a shared machine.
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed() < budget || best.is_infinite() {
        let batch = Instant::now();
        let mut calls = 0u32;
        while batch.elapsed() < Duration::from_millis(20) || calls < 2 {
            f();
            calls += 1;
        }
        best = best.min(batch.elapsed().as_secs_f64() / f64::from(calls));
    }
    best
}

/// Deterministic `A`, `B` (in the layout `g` names) and a zero `C` for the product `g`.
fn operands(g: &Gemm) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = (0..g.m * g.k)
        .map(|i| ((i % 17) as f32 - 8.0) * 0.01)
        .collect();
    let b = (0..g.b_len())
        .map(|i| ((i % 13) as f32 - 6.0) * 0.01)
        .collect();
    (a, b, vec![0.0; g.m * g.n])
}

/// GFLOP/s of the backend's gemm (one thread) on `m × k · k × n` with `B` in strips.
fn strip_gflops(m: usize, n: usize, k: usize) -> f64 {
    let g = Gemm {
        b_strips: true,
        ..Gemm::new(m, n, k)
    };
    let (a, b, mut c) = operands(&g);
    let secs = time_per_call(Duration::from_millis(400), || {
        gemm_fast(&g, &a, &b, None, &mut c, None).expect("internal: sizes");
    });
    g.flops() as f64 / secs / 1e9
}

/// The `--rows` table: per-step products at 1…12 rows.
fn rows_table() {
    println!(
        "{:>4} {:>18} {:>18}",
        "m", "m×300·300×1200 S", "m×1200·1200×300 S"
    );
    for m in 1..=12 {
        let fwd = strip_gflops(m, 1200, 300);
        let bwd = strip_gflops(m, 300, 1200);
        println!("{m:>4} {fwd:>18.1} {bwd:>18.1}");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--rows") {
        return rows_table();
    }
    let with_naive = !std::env::args().any(|a| a == "--no-naive");
    // (m, n, k, trans_a, trans_b): per-step products with a transposed weight (`dG · Wᵀ`,
    // and `h · W_hhᵀ` with PyTorch's (4H, H) layout at H = 300), a task gate's input
    // projection, the weight gradient `dGᵀ · X` of a layer over 300 and 800 rows, the
    // input gradient `dG · W_ih`, and the input projection `X · W_ihᵀ` with the weight as
    // stored ((4H, d)). `S`: the same with `B` in the strip layout the layers write for
    // the register tiles (`Backend::strip_weights`).
    let shapes = [
        (10, 1200, 408, false, false, false),
        (10, 1200, 408, false, false, true),
        (300, 1200, 408, false, false, false),
        (300, 1200, 408, false, false, true),
        (1024, 1024, 1024, false, false, false),
        (1024, 1024, 1024, false, false, true),
        (10, 408, 1200, false, true, false),
        (10, 1200, 300, false, true, false),
        (300, 300, 408, false, false, false),
        (1200, 408, 300, true, false, false),
        (1200, 408, 800, true, false, false),
        (300, 408, 1200, false, false, false),
        (300, 408, 1200, false, false, true),
        (300, 1200, 408, false, true, false),
    ];
    println!(
        "{:>20} {:>8} {:>10} {:>10} {:>10}",
        "m x n x k", "threads", "fast", "mm only", "naive"
    );
    for &(m, n, k, trans_a, trans_b, b_strips) in &shapes {
        let g = Gemm {
            trans_a,
            trans_b,
            b_strips,
            ..Gemm::new(m, n, k)
        };
        let (a, b, mut c) = operands(&g);
        for threads in [1usize, 2] {
            let pool = (threads > 1).then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("internal: thread pool")
            });
            let secs = time_per_call(Duration::from_millis(700), || {
                gemm_fast(&g, &a, &b, None, &mut c, pool.as_ref()).expect("internal: sizes");
            });
            let fast = g.flops() as f64 / secs / 1e9;
            let mm = if threads == 1 {
                let secs = time_per_call(Duration::from_millis(500), || {
                    gemm_matrixmultiply(&g, &a, &b, None, &mut c).expect("internal: sizes");
                });
                format!("{:.1}", g.flops() as f64 / secs / 1e9)
            } else {
                "-".to_string()
            };
            let naive = if with_naive && threads == 1 {
                let secs = time_per_call(Duration::from_millis(300), || {
                    gemm_naive(&g, &a, &b, None, &mut c).expect("internal: sizes");
                });
                format!("{:.2}", g.flops() as f64 / secs / 1e9)
            } else {
                "-".to_string()
            };
            println!(
                "{:>20} {threads:>8} {fast:>10.1} {mm:>10} {naive:>10}",
                format!(
                    "{m}x{n}x{k}{}{}{}",
                    if trans_a { " (Aᵀ)" } else { "" },
                    if trans_b { " (Bᵀ)" } else { "" },
                    if b_strips { " S" } else { "" }
                )
            );
        }
    }
}
