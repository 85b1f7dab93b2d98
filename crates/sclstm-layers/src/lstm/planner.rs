//! How a layer call is cut into units: one direction over one length group of sentences,
//! each its own (T_g, B_g) problem, and the row moves between a unit and the call's buffers.

use super::*;

/// One piece of a layer call: one direction over one group of sentences
/// ([`SeqShape::groups`]), run as its own (T_g, B_g) problem with its own cache.
pub(super) struct Unit<R> {
    /// 0 = forward, 1 = reverse.
    pub(super) dir: usize,
    /// Sizes: `steps` = the group's longest sentence, `batch` = its sentence count.
    pub(super) geo: DirGeometry,
    /// Internal row `t·B_g + j` → row of the caller's `(T·B, ·)` matrices: the ids of
    /// the row gathers and scatter-adds between the call cache and the unit's cache.
    pub(super) ids: Vec<u32>,
    /// Per step: sentences of the group still running (a prefix: the group is longest
    /// first), so the per-step products skip the finished ones.
    pub(super) active: Vec<usize>,
    /// The (T_g, B_g) mask (the same for both directions: reversal keeps padding last).
    pub(super) mask: Vec<R>,
}

/// Splits a layer call into units: for each group of sentences, each direction (units
/// are ordered group-major). Inside a group the sentences run longest first and the
/// reverse direction reverses each sentence.
pub(super) fn plan<R: Real>(seq: &SeqShape, geo: &DirGeometry, nd: usize) -> Vec<Unit<R>> {
    let batch = seq.batch();
    let rev = seq.reversal();
    let groups = seq.groups();
    let mut units = Vec::with_capacity(groups.len() * nd);
    for members in &groups {
        let lens: Vec<usize> = members.iter().map(|&b| seq.lens[b]).collect();
        let steps = lens.iter().copied().max().unwrap_or(0).max(1);
        let bg = members.len();
        let mask = (0..steps * bg)
            .map(|r| {
                if r / bg < lens[r % bg] {
                    R::one()
                } else {
                    R::zero()
                }
            })
            .collect::<Vec<R>>();
        let active: Vec<usize> = (0..steps)
            .map(|t| lens.iter().filter(|&&l| l > t).count())
            .collect();
        for dir in 0..nd {
            let to_caller = |r: usize| {
                let row = (r / bg) * batch + members[r % bg];
                let row = if dir == 1 { rev[row] } else { row };
                u32::try_from(row).expect("internal: validate bounds the rows to u32")
            };
            let ids = (0..steps * bg).map(to_caller).collect();
            units.push(Unit {
                dir,
                geo: DirGeometry {
                    steps,
                    batch: bg,
                    ..geo.clone()
                },
                ids,
                active: active.clone(),
                mask: mask.clone(),
            });
        }
    }
    units
}

/// Rows of `width` values at column `col` of a caller-order `(rows, stride)` buffer (the
/// table side, addressed by the unit's ids) paired with the rows of a packed unit buffer
/// (the dense side: unit row `r` after `skip` leading rows, e.g. a state buffer's zero
/// slot).
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
