//! Row gather and scatter-add over host slices ([`RowCopy`] layouts).

use sclstm_core::{NumError, Real, RowCopy};

/// Dense row `p` = table row `ids[p]`.
///
/// # Errors
/// As [`RowCopy::check`].
pub fn gather_rows<R: Real>(
    r: &RowCopy,
    ids: &[u32],
    table: &[R],
    dense: &mut [R],
) -> Result<(), NumError> {
    r.check("gather_rows", ids, table.len(), dense.len())?;
    for (p, &id) in ids.iter().enumerate() {
        let src = r.table_off + id as usize * r.table_stride;
        let dst = r.dense_off + p * r.dense_stride;
        dense[dst..dst + r.width].copy_from_slice(&table[src..src + r.width]);
    }
    Ok(())
}

/// Table row `ids[p]` += dense row `p`, in increasing `p`.
///
/// # Errors
/// As [`RowCopy::check`].
pub fn scatter_add_rows<R: Real>(
    r: &RowCopy,
    ids: &[u32],
    dense: &[R],
    table: &mut [R],
) -> Result<(), NumError> {
    r.check("scatter_add_rows", ids, table.len(), dense.len())?;
    for (p, &id) in ids.iter().enumerate() {
        let src = r.dense_off + p * r.dense_stride;
        let dst = r.table_off + id as usize * r.table_stride;
        table[dst..dst + r.width]
            .iter_mut()
            .zip(&dense[src..src + r.width])
            .for_each(|(t, &d)| *t += d);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strided layout: 3-wide rows inside 5-wide table rows from column 1, inside
    /// 4-wide dense rows after a 2-element offset.
    fn layout() -> RowCopy {
        RowCopy {
            width: 3,
            table_rows: 4,
            table_stride: 5,
            table_off: 1,
            dense_stride: 4,
            dense_off: 2,
        }
    }

    #[test]
    fn gather_copies_the_indexed_rows_and_nothing_else() -> Result<(), NumError> {
        let r = layout();
        let table: Vec<f64> = (0..1 + 4 * 5).map(f64::from).collect();
        let ids = [2u32, 0, 2, 3];
        let mut dense = vec![-1.0; 2 + 4 * 4];
        gather_rows(&r, &ids, &table, &mut dense)?;
        let mut want = vec![-1.0; dense.len()];
        for (p, &id) in ids.iter().enumerate() {
            for j in 0..3 {
                want[2 + p * 4 + j] = table[1 + id as usize * 5 + j];
            }
        }
        assert_eq!(dense, want);
        Ok(())
    }

    #[test]
    fn scatter_add_sums_repeated_ids_in_position_order() -> Result<(), NumError> {
        let r = layout();
        let ids = [2u32, 0, 2, 3];
        let dense: Vec<f32> = (0..2 + 4 * 4).map(|i| 0.1 * i as f32).collect();
        let mut table = vec![1.0f32; 1 + 4 * 5];
        scatter_add_rows(&r, &ids, &dense, &mut table)?;
        let mut want = vec![1.0f32; table.len()];
        for (p, &id) in ids.iter().enumerate() {
            for j in 0..3 {
                want[1 + id as usize * 5 + j] += dense[2 + p * 4 + j];
            }
        }
        assert_eq!(table, want);
        // Row 1 was never indexed, columns outside the window never touched.
        assert!(table[6..11].iter().all(|&v| v == 1.0));
        assert_eq!(table[0], 1.0);
        assert_eq!(table[1 + 2 * 5 + 3], 1.0);
        Ok(())
    }

    #[test]
    fn bad_ids_and_short_buffers_are_typed_errors() {
        let r = layout();
        let mut dense = vec![0.0f32; 2 + 4 * 4];
        let table = vec![0.0f32; 1 + 4 * 5];
        assert!(matches!(
            gather_rows(&r, &[4], &table, &mut dense),
            Err(NumError::IndexOutOfRange {
                index: 4,
                bound: 4,
                ..
            })
        ));
        assert!(matches!(
            gather_rows(&r, &[3], &table[..15], &mut dense),
            Err(NumError::BufferTooSmall { needed: 19, .. })
        ));
        assert!(matches!(
            gather_rows(&r, &[0, 1, 2, 3, 0], &table, &mut dense),
            Err(NumError::BufferTooSmall { needed: 21, .. })
        ));
        let overlapping = RowCopy {
            table_stride: 2,
            ..r
        };
        assert!(matches!(
            gather_rows(&overlapping, &[0], &table, &mut dense),
            Err(NumError::ShapeMismatch { .. })
        ));
        // No ids: nothing to check beyond the layout, nothing written.
        assert!(gather_rows(&r, &[], &table, &mut dense).is_ok());
    }
}
