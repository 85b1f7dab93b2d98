//! Row gather and scatter-add, WGSL against the CPU backend, compared bit for bit.
//!
//! A gather copies values, and a scatter-add sums the rows sharing an id in increasing
//! position starting from the table's value on both backends, so even non-integer inputs
//! agree exactly. Counts: 1, odd, rows·width not a multiple of the 256-lane workgroup,
//! and grids folded into more than one row (on a device limited to 4 workgroups per
//! dimension, and once at the default limit with more than 65535 workgroups).
//! Gather outputs start as NaN, and every element outside the written windows must stay
//! NaN; scatter tables must keep rows never indexed and the elements between windows.

use std::collections::HashSet;

use rand::RngExt;
use sclstm_core::{Backend, BackendErrorKind, NumError, RowCopy};

use crate::common::{TestResult, cpu, gpu, gpu_with_grid_limit, own_gpu, rng, uniform};

fn gather_on<B: Backend<Elem = f32>>(
    be: &B,
    r: &RowCopy,
    ids: &[u32],
    table: &[f32],
    dense: &[f32],
) -> Result<Vec<f32>, NumError> {
    let table = be.upload(table)?;
    let mut dense = be.upload(dense)?;
    be.gather_rows(r, ids, &table, &mut dense)?;
    be.download(&dense)
}

fn scatter_on<B: Backend<Elem = f32>>(
    be: &B,
    r: &RowCopy,
    ids: &[u32],
    dense: &[f32],
    table: &[f32],
) -> Result<Vec<f32>, NumError> {
    let dense = be.upload(dense)?;
    let mut table = be.upload(table)?;
    be.scatter_add_rows(r, ids, &dense, &mut table)?;
    be.download(&table)
}

/// Asserts `got == want` bit for bit; reports the first differing index.
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: index {i}: gpu {g} vs cpu {w}"
        );
    }
}

/// The row of the `width`-wide window (rows from `off`, `stride` apart) holding element
/// `i`, if any.
fn window_row(i: usize, off: usize, stride: usize, width: usize) -> Option<usize> {
    let rel = i.checked_sub(off)?;
    (rel % stride < width).then_some(rel / stride)
}

/// Buffer lengths for `n` ids: every table row and `n` dense rows, plus a tail that
/// neither kernel may touch.
fn lens(r: &RowCopy, n: usize) -> (usize, usize) {
    (
        r.table_off + r.table_rows * r.table_stride + 3,
        r.dense_off + n * r.dense_stride + 2,
    )
}

/// `n` ids below `r.table_rows - 3` (the last three rows are never used), about a third
/// of them on row 1, so one id collects many positions.
fn repeated_ids(n: usize, table_rows: usize, seed: u64) -> Vec<u32> {
    let mut g = rng(seed);
    let top = u32::try_from(table_rows - 3).expect("small table");
    (0..n)
        .map(|_| {
            if g.random_range(0..3) == 0 {
                1
            } else {
                g.random_range(0..top)
            }
        })
        .collect()
}

/// `0..n` in a seeded random order.
fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut g = rng(seed);
    let mut ids: Vec<u32> = (0..u32::try_from(n).expect("small n")).collect();
    for i in (1..n).rev() {
        ids.swap(i, g.random_range(0..=i));
    }
    ids
}

/// One gather on `be` and the CPU: equal bits, windows written, everything else NaN.
fn gather_case<B: Backend<Elem = f32>>(be: &B, r: RowCopy, ids: &[u32], seed: u64) -> TestResult {
    let (table_len, dense_len) = lens(&r, ids.len());
    let table = uniform(&mut rng(seed), table_len, 4.0);
    let dense = vec![f32::NAN; dense_len];
    let want = gather_on(&cpu(), &r, ids, &table, &dense)?;
    let got = gather_on(be, &r, ids, &table, &dense)?;
    let what = format!("gather_rows {r:?} n={}", ids.len());
    assert_bits(&what, &got, &want);
    for (i, v) in got.iter().enumerate() {
        let written =
            window_row(i, r.dense_off, r.dense_stride, r.width).is_some_and(|p| p < ids.len());
        assert_eq!(!v.is_nan(), written, "{what}: index {i} holds {v}");
    }
    Ok(())
}

/// One scatter-add on `be` and the CPU: equal bits, and every element outside the windows
/// of the indexed rows unchanged.
fn scatter_case<B: Backend<Elem = f32>>(be: &B, r: RowCopy, ids: &[u32], seed: u64) -> TestResult {
    let (table_len, dense_len) = lens(&r, ids.len());
    let mut g = rng(seed);
    let table = uniform(&mut g, table_len, 4.0);
    let dense = uniform(&mut g, dense_len, 1.0);
    let want = scatter_on(&cpu(), &r, ids, &dense, &table)?;
    let got = scatter_on(be, &r, ids, &dense, &table)?;
    let what = format!("scatter_add_rows {r:?} n={}", ids.len());
    assert_bits(&what, &got, &want);
    let used: HashSet<usize> = ids.iter().map(|&id| id as usize).collect();
    let mut changed = 0;
    for (i, (v, before)) in got.iter().zip(&table).enumerate() {
        match window_row(i, r.table_off, r.table_stride, r.width) {
            Some(row) if used.contains(&row) => changed += usize::from(v != before),
            _ => assert!(
                v.to_bits() == before.to_bits(),
                "{what}: index {i} outside the indexed rows changed from {before} to {v}"
            ),
        }
    }
    assert!(changed > 0, "{what}: nothing was added");
    Ok(())
}

/// 3-wide rows inside 5-wide table rows from element 2, and inside 4-wide dense rows
/// after 1 element.
fn strided(table_rows: usize) -> RowCopy {
    RowCopy {
        width: 3,
        table_rows,
        table_stride: 5,
        table_off: 2,
        dense_stride: 4,
        dense_off: 1,
    }
}

/// Embedding-like 58-wide rows inside 61-wide table rows and 64-wide dense rows.
fn strided_wide(table_rows: usize) -> RowCopy {
    RowCopy {
        width: 58,
        table_rows,
        table_stride: 61,
        table_off: 7,
        dense_stride: 64,
        dense_off: 5,
    }
}

/// (layout, id count): 1; odd; the representative (T·B = 300) × 58 (17400 lanes, not a
/// multiple of 256); the same strided; 257 lanes of width 1.
fn cases() -> Vec<(RowCopy, usize)> {
    vec![
        (RowCopy::packed(10, 1), 1),
        (strided(9), 7),
        (RowCopy::packed(40, 58), 300),
        (strided_wide(50), 301),
        (RowCopy::packed(600, 1), 257),
    ]
}

#[test]
fn gather_rows_parity_exact() -> TestResult {
    for (k, (r, n)) in cases().into_iter().enumerate() {
        let seed = 700 + k as u64;
        gather_case(gpu(), r, &repeated_ids(n, r.table_rows, seed), seed)?;
        // Every table row once, in a shuffled order (a row permutation).
        let perm = permutation(r.table_rows, seed);
        gather_case(gpu(), r, &perm, seed + 50)?;
    }
    Ok(())
}

#[test]
fn scatter_add_rows_parity_exact() -> TestResult {
    for (k, (r, n)) in cases().into_iter().enumerate() {
        let seed = 800 + k as u64;
        scatter_case(gpu(), r, &repeated_ids(n, r.table_rows, seed), seed)?;
        // A permutation (one position per segment), and every position on one id.
        scatter_case(gpu(), r, &permutation(r.table_rows, seed), seed + 50)?;
        scatter_case(gpu(), r, &vec![2; n], seed + 100)?;
    }
    Ok(())
}

/// On a device limited to 4 workgroups per dimension (1024 lanes per grid row, 4096 in
/// all), grids of 2 to 4 rows, the last one partly surplus; and a call needing more than
/// the folded grid holds is a typed error, not a device error.
#[test]
fn row_kernels_fold_the_grid_into_rows() -> TestResult {
    let be = gpu_with_grid_limit(4)?;
    let limits = be.context().device().limits();
    assert_eq!(limits.max_compute_workgroups_per_dimension, 4);
    // 199·13 = 2587 lanes: 11 workgroups as 4 × 3; 300·13 = 3900 lanes: 16 as 4 × 4.
    for (k, n) in [199usize, 300].into_iter().enumerate() {
        let seed = 900 + k as u64;
        let wide = RowCopy::packed(n + 4, 13);
        gather_case(&be, wide, &repeated_ids(n, n + 4, seed), seed)?;
        gather_case(&be, wide, &permutation(n, seed), seed)?;
        // Scatter-add lanes = distinct ids · width: a permutation keeps all n rows.
        scatter_case(&be, wide, &permutation(n, seed), seed)?;
        scatter_case(&be, wide, &repeated_ids(n, n + 4, seed), seed)?;
    }
    // 400·13 = 5200 lanes: 21 workgroups > 4 · 4.
    let r = RowCopy::packed(400, 13);
    let ids = permutation(400, 950);
    let table = be.zeros(400 * 13)?;
    let mut dense = be.zeros(400 * 13)?;
    let err = be.gather_rows(&r, &ids, &table, &mut dense).unwrap_err();
    assert!(
        matches!(&err, NumError::Backend { kind: BackendErrorKind::Limit, message, .. }
            if message.contains("workgroups")),
        "{err}"
    );
    Ok(())
}

/// More than 65535 workgroups at the default limit: 300 000 ids × 58 = 17.4 M lanes,
/// 67 969 workgroups, folded into two grid rows.
#[test]
fn gather_rows_beyond_one_grid_row_at_the_default_limit() -> TestResult {
    let n = 300_000;
    let r = RowCopy::packed(1000, 58);
    gather_case(gpu(), r, &repeated_ids(n, r.table_rows, 990), 990)
}

/// Bad ids, short buffers and overlapping strides are the CPU's typed errors, and a
/// failed call leaves its output untouched.
#[test]
fn row_errors_match_the_cpu() -> TestResult {
    let r = strided(4);
    // Exactly what ids up to 3 and four dense rows need: off + 3·stride + width.
    let good_table = 2 + 3 * 5 + 3;
    let good_dense = 1 + 3 * 4 + 3;
    let overlapping = RowCopy {
        table_stride: 2,
        ..r
    };
    // (layout, ids, table length, dense length).
    let bad: [(RowCopy, &[u32], usize, usize); 5] = [
        (r, &[0, 4], good_table, good_dense),
        (r, &[3], good_table - 1, good_dense),
        (r, &[0, 1, 2, 3, 0], good_table, good_dense),
        (r, &[0, 1, 2, 3], good_table, good_dense - 1),
        (overlapping, &[0], good_table, good_dense),
    ];
    fn errors<B: Backend<Elem = f32>>(
        be: &B,
        bad: &[(RowCopy, &[u32], usize, usize)],
    ) -> Result<Vec<NumError>, NumError> {
        let mut out = Vec::new();
        for &(r, ids, table_len, dense_len) in bad {
            let mut table = be.upload(&vec![1.5; table_len])?;
            let mut dense = be.upload(&vec![2.5; dense_len])?;
            let gather = be.gather_rows(&r, ids, &table, &mut dense);
            let scatter = be.scatter_add_rows(&r, ids, &dense, &mut table);
            out.extend(gather.err());
            out.extend(scatter.err());
            assert_eq!(be.download(&dense)?, vec![2.5; dense_len], "{r:?} {ids:?}");
            assert_eq!(be.download(&table)?, vec![1.5; table_len], "{r:?} {ids:?}");
        }
        Ok(out)
    }
    let on_cpu = errors(&cpu(), &bad)?;
    let on_gpu = errors(gpu(), &bad)?;
    assert_eq!(
        on_gpu.len(),
        2 * bad.len(),
        "every bad call fails: {on_gpu:?}"
    );
    assert_eq!(on_gpu, on_cpu);
    assert_eq!(
        on_gpu[0],
        NumError::IndexOutOfRange {
            op: "gather_rows",
            index: 4,
            bound: 4
        }
    );
    assert_eq!(
        on_gpu[3],
        NumError::BufferTooSmall {
            op: "scatter_add_rows",
            len: good_table - 1,
            needed: good_table
        }
    );
    assert!(matches!(on_gpu[8], NumError::ShapeMismatch { .. }));
    // No ids, or zero width: nothing to do, nothing written.
    let table = gpu().upload(&[1.0; 4])?;
    let mut dense = gpu().upload(&[f32::NAN; 4])?;
    gpu().gather_rows(&RowCopy::packed(4, 1), &[], &table, &mut dense)?;
    gpu().gather_rows(&RowCopy::packed(4, 0), &[3, 1], &table, &mut dense)?;
    assert!(gpu().download(&dense)?.iter().all(|v| v.is_nan()));
    Ok(())
}

/// Buffers of the chained row calls, downloaded in this order at the end.
const CHAIN: [&str; 6] = ["table", "grad", "a", "b", "c", "d"];
const CHAIN_ROWS: usize = 20;
const CHAIN_WIDTH: usize = 6;

/// Gathers and scatter-adds with different ids, each reading what the previous ones
/// wrote, recorded back to back with one host id vector overwritten between calls and
/// no download in between.
fn chained_rows<B: Backend<Elem = f32>>(be: &B, table: &[f32]) -> Result<Vec<Vec<f32>>, NumError> {
    let r = RowCopy::packed(CHAIN_ROWS, CHAIN_WIDTH);
    let mut table = be.upload(table)?;
    let mut grad = be.zeros(CHAIN_ROWS * CHAIN_WIDTH)?;
    let [mut a, mut b, mut c, mut d] =
        [9, 13, 11, 20].map(|n| be.upload(&vec![f32::NAN; n * CHAIN_WIDTH]).expect("upload"));
    let mut ids: Vec<u32> = Vec::new();
    let set = |ids: &mut Vec<u32>, n: usize, seed: u64| {
        ids.clear();
        ids.extend(repeated_ids(n, CHAIN_ROWS, seed));
    };
    set(&mut ids, 9, 1);
    be.gather_rows(&r, &ids, &table, &mut a)?;
    set(&mut ids, 13, 2);
    be.gather_rows(&r, &ids, &table, &mut b)?;
    set(&mut ids, 9, 3);
    be.scatter_add_rows(&r, &ids, &a, &mut grad)?;
    set(&mut ids, 13, 4);
    be.scatter_add_rows(&r, &ids, &b, &mut grad)?;
    // Reads the two scatter-adds' result.
    set(&mut ids, 11, 5);
    be.gather_rows(&r, &ids, &grad, &mut c)?;
    // Changes the table the first two gathers read.
    ids.clear();
    ids.extend([19, 0, 19, 5, 5, 5, 7, 0, 19, 2, 1]);
    be.scatter_add_rows(&r, &ids, &c, &mut table)?;
    ids.clear();
    ids.extend(permutation(CHAIN_ROWS, 6));
    be.gather_rows(&r, &ids, &table, &mut d)?;
    [&table, &grad, &a, &b, &c, &d]
        .into_iter()
        .map(|buf| be.download(buf))
        .collect()
}

#[test]
fn back_to_back_row_calls_each_read_their_own_ids() -> TestResult {
    let table = uniform(&mut rng(1000), CHAIN_ROWS * CHAIN_WIDTH, 2.0);
    let want = chained_rows(&cpu(), &table)?;
    let be = own_gpu();
    let got = chained_rows(&be, &table)?;
    for ((name, g), w) in CHAIN.iter().zip(&got).zip(&want) {
        assert_bits(&format!("chained rows: {name}"), g, w);
    }
    // Seven row dispatches in one pass and one submission (the first download's).
    let stats = be.stats();
    assert_eq!(stats.dispatches, 7);
    assert_eq!(stats.compute_passes, 1);
    assert_eq!(stats.index_arena_grows, 0);
    assert!(got.iter().flatten().all(|v| v.is_finite()));
    Ok(())
}
