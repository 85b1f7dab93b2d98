//! Per-dispatch uniform structs, mirrored field by field in the WGSL sources.
//!
//! Every field is a `u32` so the Rust and WGSL layouts agree without padding rules;
//! each struct is 16-byte aligned and padded by explicit fields to a multiple of 16
//! bytes, as uniform buffers require (and `Pod` forbids implicit padding).

use bytemuck::{Pod, Zeroable};

/// Dimensions of one gemm dispatch (`gemm` or `gemm_small_m`): `GemmDims` in `shaders/gemm.wgsl`.
///
/// Offsets are element offsets: storage-buffer *binding* offsets must be multiples of
/// 256 bytes, so the whole buffer is bound and the shader adds the offset when indexing.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct GemmDims {
    /// Rows of `op(A)` and `C`.
    pub m: u32,
    /// Columns of `op(B)` and `C`.
    pub n: u32,
    /// Inner dimension.
    pub k: u32,
    /// Element offset of `A`.
    pub a_off: u32,
    /// Element offset of `B`.
    pub b_off: u32,
    /// Element offset of `C`.
    pub c_off: u32,
    /// 1 when `A` is stored `k × m`.
    pub trans_a: u32,
    /// 1 when `B` is stored `n × k`.
    pub trans_b: u32,
    /// 1 to add to `C`, 0 to overwrite it.
    pub accumulate: u32,
    /// 1 when the bias binding holds `n` real values.
    pub has_bias: u32,
    /// Padding to 48 bytes.
    pub pad0: u32,
    /// Padding to 48 bytes.
    pub pad1: u32,
}

/// Rows and offsets of one pointwise cell dispatch (a [`sclstm_core::CellStep`]):
/// `CellDims` in `shaders/lstm_cell.wgsl` and `shaders/task_gate.wgsl`.
///
/// Offsets are in rows (of `4·hidden` elements in `gates` / `d_gates`, `hidden` in
/// every other buffer), so one bind group serves every step on the same buffers.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct CellDims {
    /// Rows of the step (`n_t`, the sentences still running).
    pub rows: u32,
    /// Hidden size `H`.
    pub hidden: u32,
    /// First row of the step in the step buffers (`p_t`).
    pub step: u32,
    /// First row of the state before the step in the state buffers.
    pub prev: u32,
    /// First row of the state after the step in the state buffers.
    pub next: u32,
    /// Padding to 32 bytes.
    pub pad0: u32,
    /// Padding to 32 bytes.
    pub pad1: u32,
    /// Padding to 32 bytes.
    pub pad2: u32,
}

/// Layout of one row gather or scatter-add dispatch: `RowDims` in `shaders/rows.wgsl`.
///
/// `list_off` and `seg_off` are word offsets into the backend's index arena, where the
/// host placed this dispatch's ids (gather) or its sorted positions and segments
/// (scatter-add).
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct RowDims {
    /// Values moved per row.
    pub width: u32,
    /// Rows of the grid: ids (gather) or distinct ids (scatter-add).
    pub rows: u32,
    /// Distance between table rows.
    pub table_stride: u32,
    /// Element offset of table row 0.
    pub table_off: u32,
    /// Distance between dense rows.
    pub dense_stride: u32,
    /// Element offset of dense row 0.
    pub dense_off: u32,
    /// Arena offset of the ids (gather) or of the positions sorted by (id, p) (scatter-add).
    pub list_off: u32,
    /// Arena offset of the (id, start) segment pairs (scatter-add; 0 for a gather).
    pub seg_off: u32,
}

#[cfg(test)]
mod tests {
    use super::{CellDims, GemmDims, RowDims};

    #[test]
    fn uniform_structs_are_16_byte_multiples() {
        assert_eq!(std::mem::size_of::<GemmDims>(), 48);
        assert_eq!(std::mem::size_of::<GemmDims>() % 16, 0);
        assert_eq!(std::mem::align_of::<GemmDims>(), 16);
        assert_eq!(std::mem::size_of::<CellDims>(), 32);
        assert_eq!(std::mem::size_of::<CellDims>() % 16, 0);
        assert_eq!(std::mem::align_of::<CellDims>(), 16);
        assert_eq!(std::mem::size_of::<RowDims>(), 32);
        assert_eq!(std::mem::size_of::<RowDims>() % 16, 0);
        assert_eq!(std::mem::align_of::<RowDims>(), 16);
    }
}
