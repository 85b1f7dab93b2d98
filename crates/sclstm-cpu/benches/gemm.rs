//! Criterion benchmarks of the CPU gemm at the engine's shapes, fast vs naive.
//!
//! Group `cpu_gemm`; throughput is reported in FLOPs (2·m·n·k per call).
//! `cargo bench -p sclstm-cpu --bench gemm`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sclstm_core::Gemm;
use sclstm_cpu::gemm::{gemm_fast, gemm_matrixmultiply, gemm_naive};

/// (label, gemm): recurrent forward `h·W` (m = batch 10), recurrent backward `d_gates·Wᵀ`,
/// batched input projection over 30 steps, and a square reference.
fn shapes() -> Vec<(&'static str, Gemm)> {
    vec![
        ("recurrent_fwd_10x1200x408", Gemm::new(10, 1200, 408)),
        (
            "recurrent_bwd_10x408x1200_tb",
            Gemm {
                trans_b: true,
                ..Gemm::new(10, 408, 1200)
            },
        ),
        ("input_proj_300x1200x408", Gemm::new(300, 1200, 408)),
        ("square_1024", Gemm::new(1024, 1024, 1024)),
    ]
}

fn bench(c: &mut Criterion) {
    let pool2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("thread pool");
    let mut group = c.benchmark_group("cpu_gemm");
    group.sample_size(20);
    for (label, g) in shapes() {
        let a: Vec<f32> = (0..g.m * g.k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..g.k * g.n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; g.m * g.n];
        group.throughput(Throughput::Elements(g.flops()));
        group.bench_function(BenchmarkId::new("fast_1t", label), |bch| {
            bch.iter(|| gemm_fast(&g, &a, &b, None, &mut out, None).expect("sizes"))
        });
        group.bench_function(BenchmarkId::new("matrixmultiply_1t", label), |bch| {
            bch.iter(|| gemm_matrixmultiply(&g, &a, &b, None, &mut out).expect("sizes"))
        });
        group.bench_function(BenchmarkId::new("fast_2t", label), |bch| {
            bch.iter(|| gemm_fast(&g, &a, &b, None, &mut out, Some(&pool2)).expect("sizes"))
        });
        if g.m <= 10 {
            group.bench_function(BenchmarkId::new("naive", label), |bch| {
                bch.iter(|| gemm_naive(&g, &a, &b, None, &mut out).expect("sizes"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
