//! How a layer call runs: one unit per direction over the whole batch in the packed
//! layout (longest sentence first, one row per real token, see `sclstm_core::backend`),
//! and the row moves between a unit and the call's buffers.

use super::*;

/// One direction of a layer call, run in the packed layout with its own cache.
pub(super) struct Unit {
    /// 0 = forward, 1 = reverse.
    pub(super) dir: usize,
    /// Sizes of the call (`tokens` = the packed rows `N`).
    pub(super) geo: DirGeometry,
    /// Packed row `p` → row of the caller's `(T·B, ·)` matrices: the ids of the row
    /// gathers and scatter-adds between the call cache and the unit's cache. Step `t`'s
    /// rows are the sentences still running, longest first; the reverse direction reads
    /// each sentence backwards.
    pub(super) ids: Vec<u32>,
    /// Packed row `p` → the state row its step reads (`h_{t-1}`, `q_{t-1}`): the ids of
    /// the gathers that line the previous states up with the steps for the recurrent
    /// weight gradients.
    pub(super) prev_ids: Vec<u32>,
    /// The steps in time order: rows running and their offsets.
    pub(super) steps: Vec<CellStep>,
}

/// Plans a layer call: one unit per direction (forward first), both over the batch
/// longest first, the reverse direction reversing each sentence.
pub(super) fn plan(seq: &SeqShape, geo: &DirGeometry, nd: usize) -> Vec<Unit> {
    let batch = seq.batch();
    let rev = seq.reversal();
    let order = seq.longest_first();
    let to_u32 =
        |row: usize| u32::try_from(row).expect("internal: validate bounds the rows to u32");
    let mut steps = Vec::with_capacity(seq.steps);
    let mut prev_ids = Vec::with_capacity(geo.tokens);
    let (mut at, mut prev) = (0, 0);
    // Trailing steps past the longest sentence have no rows and are skipped.
    for rows in seq.active().into_iter().take_while(|&rows| rows > 0) {
        let s = CellStep {
            rows,
            hidden: geo.hidden,
            step: at,
            prev,
            next: batch + at,
        };
        prev_ids.extend((s.prev..s.prev + rows).map(to_u32));
        steps.push(s);
        prev = s.next;
        at += rows;
    }
    (0..nd)
        .map(|dir| {
            let ids = steps
                .iter()
                .enumerate()
                .flat_map(|(t, s)| order[..s.rows].iter().map(move |&b| t * batch + b))
                .map(|row| to_u32(if dir == 1 { rev[row] } else { row }))
                .collect();
            Unit {
                dir,
                geo: geo.clone(),
                ids,
                prev_ids: prev_ids.clone(),
                steps: steps.clone(),
            }
        })
        .collect()
}

/// Rows of `width` values at column `col` of a caller-order `(rows, stride)` buffer (the
/// table side, addressed by the unit's ids) paired with the rows of a packed unit buffer
/// (the dense side: unit row `r` after `skip` leading rows, e.g. a state buffer's
/// initial rows).
pub(super) fn caller_rows(
    rows: usize,
    stride: usize,
    col: usize,
    width: usize,
    skip: usize,
) -> RowCopy {
    RowCopy {
        width,
        table_rows: rows,
        table_stride: stride,
        table_off: col,
        dense_stride: width,
        dense_off: skip * width,
    }
}
