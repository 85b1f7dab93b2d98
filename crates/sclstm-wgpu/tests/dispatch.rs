//! Host-side recording: kernel choice by m, bind group reuse across time steps, eviction
//! when buffers are dropped, the cache bound, compute passes per run of dispatches, and
//! the index arena that carries the row ids of gathers and scatter-adds, and split
//! downloads.
//! Each test uses a backend of its own ([`own_gpu`]) so the counters are its own.

use sclstm_core::{Backend, Gemm, NumError, RowCopy};
use sclstm_wgpu::{BIND_GROUP_CACHE_MAX, SMALL_M_MAX};

use crate::common::{TestResult, assert_close, cpu, own_gpu, packed_steps, rng, uniform};

#[test]
fn gemm_kernel_follows_m() -> TestResult {
    let be = own_gpu();
    let a = be.zeros(64 * 8)?;
    let b = be.zeros(8 * 8)?;
    let mut c = be.zeros(64 * 8)?;
    for (m, small) in [
        (1, true),
        (10, true),
        (16, true),
        (17, true),
        (SMALL_M_MAX, true),
        (SMALL_M_MAX + 1, false),
        (64, false),
    ] {
        let before = be.stats();
        be.gemm(&Gemm::new(m, 8, 8), &a, &b, None, &mut c)?;
        let after = be.stats();
        assert_eq!(after.dispatches - before.dispatches, 1, "m = {m}");
        assert_eq!(
            after.small_m_gemms - before.small_m_gemms,
            u64::from(small),
            "m = {m}"
        );
    }
    be.sync()?;
    Ok(())
}

/// Sentences running at each step (lengths 6, 4 and 1, longest first): `T` steps over
/// a batch of `B`, `TOKENS` rows in the step buffers.
const RUNNING: [usize; 6] = [3, 2, 2, 2, 1, 1];
const T: usize = RUNNING.len();
const B: usize = RUNNING[0];
const TOKENS: usize = 11;
const H: usize = 5;

/// Records the `T` steps of `gates[step] += h_{t-1} · W; cell forward` (one submission).
fn gate_loop<Bk: Backend<Elem = f32>>(
    be: &Bk,
    w: &Bk::Buf,
    gates: &mut Bk::Buf,
    bufs: &mut [Bk::Buf; 3],
) -> TestResult {
    let [c, h, tanh_c] = bufs;
    for s in packed_steps(&RUNNING, H) {
        let rec = Gemm {
            a_off: s.prev * H,
            c_off: s.step * 4 * H,
            accumulate: true,
            ..Gemm::new(s.rows, 4 * H, H)
        };
        be.gemm(&rec, h, w, None, gates)?;
        be.lstm_cell_fwd(s, gates, c, h, tanh_c)?;
    }
    Ok(())
}

/// The second pass over a time loop creates no bind group: every step binds the same
/// buffers and only the uniform (rows, offsets) changes. The whole loop is one compute
/// pass and one submit, and the results still match the CPU at every step.
#[test]
fn time_loop_reuses_bind_groups() -> TestResult {
    assert_eq!(RUNNING.iter().sum::<usize>(), TOKENS);
    let gpu = own_gpu();
    let mut r = rng(31);
    let w_host = uniform(&mut r, H * 4 * H, 0.8);
    let x_host = uniform(&mut r, TOKENS * 4 * H, 1.0);
    // c, h and tanh_c, all as long as the state buffers (B + TOKENS rows).
    let state_len = (B + TOKENS) * H;
    let run = |first: bool| -> Result<Vec<f32>, Box<dyn std::error::Error>> {
        let cpu = cpu();
        let mut out = Vec::new();
        for on_gpu in [true, false] {
            let h = if on_gpu {
                let w = gpu.upload(&w_host)?;
                let mut gates = gpu.upload(&x_host)?;
                let mut bufs = [0; 3].map(|_| gpu.zeros(state_len).expect("zeros"));
                gpu.sync()?;
                let before = gpu.stats();
                gate_loop(&gpu, &w, &mut gates, &mut bufs)?;
                // Same buffers again, restarted from the same state: no new bind group.
                gpu.write(&mut gates, &x_host)?;
                for buf in &mut bufs {
                    gpu.fill_zero(buf)?;
                }
                let middle = gpu.stats();
                gate_loop(&gpu, &w, &mut gates, &mut bufs)?;
                gpu.sync()?;
                let after = gpu.stats();
                let created = middle.bind_groups_created - before.bind_groups_created;
                assert_eq!(created, if first { 2 } else { 0 }, "first loop");
                assert_eq!(after.bind_groups_created, middle.bind_groups_created);
                assert_eq!(after.dispatches - middle.dispatches, 2 * T as u64);
                assert_eq!(after.compute_passes - middle.compute_passes, 1);
                assert_eq!(after.submits - middle.submits, 1);
                gpu.download(&bufs[1])?
            } else {
                let w = cpu.upload(&w_host)?;
                let mut gates = cpu.upload(&x_host)?;
                let mut bufs = [0; 3].map(|_| cpu.zeros(state_len).expect("zeros"));
                gate_loop(&cpu, &w, &mut gates, &mut bufs)?;
                cpu.download(&bufs[1])?
            };
            out.push(h);
        }
        assert_close("gate loop h", &out[0], &out[1], 2e-5, 1e-4);
        Ok(out.swap_remove(0))
    };
    // The first run creates the two bind groups (gemm, cell); the second run allocates
    // new buffers, so it creates two more and evicts the two of the dropped buffers.
    let h1 = run(true)?;
    let evicted = gpu.stats().bind_groups_evicted;
    let h2 = run(true)?;
    assert_eq!(h1, h2);
    assert!(gpu.stats().bind_groups_evicted >= evicted + 2);
    assert_eq!(
        gpu.cached_bind_groups(),
        0,
        "every buffer of both runs is dropped"
    );
    Ok(())
}

/// A cached bind group must not keep a dropped buffer alive: dropping any buffer it
/// binds evicts it. Dropping an input right after recording (before the submit) is
/// still safe: the recorded pass keeps what it uses until it has run.
#[test]
fn dropping_a_buffer_evicts_its_bind_groups() -> TestResult {
    let be = own_gpu();
    let a = be.upload(&[1.0, 2.0, 3.0, 4.0])?;
    let b = be.upload(&[1.0, 0.0, 0.0, 1.0])?;
    let mut c = be.zeros(4)?;
    be.gemm(&Gemm::new(2, 2, 2), &a, &b, None, &mut c)?;
    assert_eq!(be.cached_bind_groups(), 1);
    let mut c2 = be.zeros(4)?;
    be.gemm(&Gemm::new(2, 2, 2), &a, &b, None, &mut c2)?;
    assert_eq!(be.cached_bind_groups(), 2);
    drop(a);
    assert_eq!(be.cached_bind_groups(), 0, "both bind `a`");
    assert_eq!(be.stats().bind_groups_evicted, 2);
    assert_eq!(be.download(&c)?, vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(be.download(&c2)?, vec![1.0, 2.0, 3.0, 4.0]);
    // A new buffer gets a new identity: a fresh bind group, the new contents.
    let a = be.upload(&[5.0, 6.0, 7.0, 8.0])?;
    be.gemm(&Gemm::new(2, 2, 2), &a, &b, None, &mut c)?;
    assert_eq!(be.cached_bind_groups(), 1);
    assert_eq!(be.download(&c)?, vec![5.0, 6.0, 7.0, 8.0]);
    Ok(())
}

/// More distinct (kernel, buffers) combinations than the cache holds, all alive: the
/// cache stays bounded and every dispatch still writes its own output.
#[test]
fn bind_group_cache_is_bounded() -> TestResult {
    let be = own_gpu();
    let a = be.upload(&[2.0])?;
    let b = be.upload(&[3.0])?;
    let n = BIND_GROUP_CACHE_MAX + 10;
    let mut outs = (0..n)
        .map(|_| be.upload(&[f32::NAN]))
        .collect::<Result<Vec<_>, _>>()?;
    for c in &mut outs {
        be.gemm(&Gemm::new(1, 1, 1), &a, &b, None, c)?;
    }
    assert!(be.cached_bind_groups() <= BIND_GROUP_CACHE_MAX);
    assert_eq!(be.stats().bind_groups_created, n as u64);
    be.sync()?;
    for c in [&outs[0], &outs[n / 2], &outs[n - 1]] {
        assert_eq!(be.download(c)?, vec![6.0]);
    }
    Ok(())
}

/// Dispatches share a compute pass until a copy (write, fill, download) intervenes.
#[test]
fn copies_split_compute_passes() -> TestResult {
    let be = own_gpu();
    let a = be.upload(&[1.0, 2.0])?;
    let mut x = be.upload(&[1.0, 1.0])?;
    let mut c = be.zeros(2)?;
    be.gemm(&Gemm::new(1, 1, 2), &a, &x, None, &mut c)?;
    be.gemm(
        &Gemm {
            c_off: 1,
            ..Gemm::new(1, 1, 2)
        },
        &a,
        &x,
        None,
        &mut c,
    )?;
    assert_eq!(be.stats().compute_passes, 1);
    be.write(&mut x, &[10.0])?;
    be.gemm(
        &Gemm {
            c_off: 1,
            ..Gemm::new(1, 1, 2)
        },
        &a,
        &x,
        None,
        &mut c,
    )?;
    assert_eq!(be.stats().compute_passes, 2);
    assert_eq!(be.download(&c)?, vec![3.0, 12.0]);
    assert_eq!(be.stats().submits, 1);
    Ok(())
}

/// Writes go through reused staging chunks and downloads through one reused readback
/// buffer: sizes above one chunk (1 MiB), many writes in one submission, a small
/// download after a large one and the reverse all return exactly what was written,
/// and a short write changes only the start of its buffer.
#[test]
fn staging_and_readback_reuse_keep_data_exact() -> TestResult {
    let be = own_gpu();
    let big_len = 300_000; // 1.2 MB: larger than one staging chunk
    let mut big = be.zeros(big_len)?;
    let mut small = be.upload(&[f32::NAN; 7])?;
    for round in 0..3 {
        let base = round as f32 * 1000.0;
        let big_data: Vec<f32> = (0..big_len).map(|i| base + (i % 977) as f32).collect();
        be.write(&mut big, &big_data)?;
        for i in 0..20 {
            // Later writes to the same buffer win, in program order.
            be.write(&mut small, &[base + i as f32; 7])?;
        }
        be.write(&mut small, &[-1.0, -2.0])?;
        let mut want_small = vec![base + 19.0; 7];
        want_small[..2].copy_from_slice(&[-1.0, -2.0]);
        assert_eq!(be.download(&small)?, want_small, "round {round}");
        assert_eq!(be.download(&big)?, big_data, "round {round}");
        assert_eq!(be.download(&small)?, want_small, "round {round}");
    }
    Ok(())
}

/// `download_parts` returns consecutive parts of a buffer in one submission, exactly
/// as separate downloads would, and rejects parts longer than the buffer.
#[test]
fn download_parts_splits_one_transfer() -> TestResult {
    let be = own_gpu();
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25 - 3.0).collect();
    let buf = be.upload(&data)?;
    let before = be.stats().submits;
    let parts = be.download_parts(&buf, &[600, 0, 1, 390])?;
    assert_eq!(be.stats().submits - before, 1, "one transfer");
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], data[..600]);
    assert!(parts[1].is_empty());
    assert_eq!(parts[2], data[600..601]);
    assert_eq!(parts[3], data[601..991]);
    let cpu = cpu();
    assert_eq!(
        cpu.download_parts(&cpu.upload(&data)?, &[600, 0, 1, 390])?,
        parts
    );
    assert!(matches!(
        be.download_parts(&buf, &[600, 401]),
        Err(NumError::BufferTooSmall { needed: 1001, .. })
    ));
    assert!(matches!(
        cpu.download_parts(&cpu.upload(&data)?, &[600, 401]),
        Err(NumError::BufferTooSmall { needed: 1001, .. })
    ));
    Ok(())
}

/// Ids `(k·seed + 3) mod rows` for `k < n`: a different list for every seed.
fn ids_for(n: usize, rows: usize, seed: usize) -> Vec<u32> {
    (0..n)
        .map(|k| u32::try_from((k * seed + 3) % rows).expect("small ids"))
        .collect()
}

/// Row ids travel in the index arena, not in a copy: gathers and scatter-adds with new
/// ids at every call, mixed with another kernel, stay in one compute pass, record one
/// dispatch each, create their bind groups once and submit nothing before the download.
#[test]
fn row_calls_share_the_pass_and_their_bind_groups() -> TestResult {
    let gpu = own_gpu();
    let r = RowCopy::packed(30, 8);
    let table_host: Vec<f32> = (0..30 * 8).map(|i| (i % 17) as f32 - 8.0).collect();
    fn record<Bk: Backend<Elem = f32>>(
        be: &Bk,
        r: &RowCopy,
        round: usize,
        bufs: &mut [Bk::Buf; 4],
    ) -> Result<(), NumError> {
        let [table, dense, grad, c] = bufs;
        be.gather_rows(r, &ids_for(12, 30, round + 1), table, dense)?;
        be.scatter_add_rows(r, &ids_for(12, 30, 2 * round + 5), dense, grad)?;
        be.gemm(&Gemm::new(1, 1, 1), table, table, None, c)
    }
    let run = |be_is_gpu: bool| -> Result<Vec<f32>, Box<dyn std::error::Error>> {
        if be_is_gpu {
            let mut bufs = [
                gpu.upload(&table_host)?,
                gpu.zeros(12 * 8)?,
                gpu.zeros(30 * 8)?,
                gpu.zeros(1)?,
            ];
            gpu.sync()?;
            let before = gpu.stats();
            record(&gpu, &r, 0, &mut bufs)?;
            let first = gpu.stats();
            for round in 1..5 {
                record(&gpu, &r, round, &mut bufs)?;
            }
            let after = gpu.stats();
            assert_eq!(first.bind_groups_created - before.bind_groups_created, 3);
            assert_eq!(after.bind_groups_created, first.bind_groups_created);
            assert_eq!(after.dispatches - before.dispatches, 15);
            assert_eq!(after.compute_passes - before.compute_passes, 1);
            assert_eq!(after.submits, before.submits);
            Ok(gpu.download(&bufs[2])?)
        } else {
            let cpu = cpu();
            let mut bufs = [
                cpu.upload(&table_host)?,
                cpu.zeros(12 * 8)?,
                cpu.zeros(30 * 8)?,
                cpu.zeros(1)?,
            ];
            for round in 0..5 {
                record(&cpu, &r, round, &mut bufs)?;
            }
            Ok(cpu.download(&bufs[2])?)
        }
    };
    // Integer-valued rows: the sums are exact on both backends.
    assert_eq!(run(true)?, run(false)?);
    Ok(())
}

/// A submission whose row lists outgrow the index arena (16 Ki words) submits what was
/// recorded, grows the arena and carries on correctly; the same work again then fits:
/// no growth, one submit per round (its download), and no new bind group.
#[test]
fn index_arena_grows_once_then_fits() -> TestResult {
    let gpu = own_gpu();
    let cpu = cpu();
    let r = RowCopy::packed(100, 1);
    let table_host: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let (small, big) = (ids_for(10, 97, 7), ids_for(20_000, 97, 13));
    fn round<Bk: Backend<Elem = f32>>(
        be: &Bk,
        r: &RowCopy,
        ids: [&[u32]; 2],
        bufs: &mut [Bk::Buf; 4],
    ) -> Result<Vec<f32>, NumError> {
        let [table, a, b, grad] = bufs;
        be.gather_rows(r, ids[0], table, a)?;
        be.gather_rows(r, ids[1], table, b)?;
        be.scatter_add_rows(r, ids[1], b, grad)?;
        be.download(grad)
    }
    let mut on_gpu = [
        gpu.upload(&table_host)?,
        gpu.zeros(10)?,
        gpu.zeros(20_000)?,
        gpu.zeros(100)?,
    ];
    let mut on_cpu = [
        cpu.upload(&table_host)?,
        cpu.zeros(10)?,
        cpu.zeros(20_000)?,
        cpu.zeros(100)?,
    ];
    let mut created = Vec::new();
    for k in 0..3 {
        let before = gpu.stats();
        let got = round(&gpu, &r, [&small, &big], &mut on_gpu)?;
        let after = gpu.stats();
        let want = round(&cpu, &r, [&small, &big], &mut on_cpu)?;
        assert_eq!(got, want, "round {k}");
        let grows = after.index_arena_grows - before.index_arena_grows;
        if k == 0 {
            assert!(grows >= 1, "the first round outgrows the arena");
        } else {
            assert_eq!(grows, 0, "round {k}");
            assert_eq!(after.submits - before.submits, 1, "round {k}");
        }
        created.push(after.bind_groups_created - before.bind_groups_created);
    }
    assert_eq!(created[2], 0, "bind groups created per round: {created:?}");
    assert_eq!(gpu.download(&on_gpu[1])?, cpu.download(&on_cpu[1])?);
    Ok(())
}
