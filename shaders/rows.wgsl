// rows.wgsl: row gather (an embedding lookup, a row permutation) and its gradient, the
// row scatter-add, between a *table* addressed by row ids and a *dense* buffer whose
// row p pairs with the p-th id (`RowCopy` in crates/sclstm-core/src/backend.rs).
//
// Layouts, with W = width (values moved per row), all offsets and strides in elements:
//   table row i, column j < W : table[table_off + i·table_stride + j]
//   dense row p, column j < W : dense[dense_off + p·dense_stride + j]
// Elements outside these W-wide windows are never read or written. The host has checked
// every id against the table's rows and both buffers against the regions touched
// (`RowCopy::check`), and never dispatches with no rows or W = 0.
//
// The row ids reach the kernels through the backend's *index arena*: one u32 storage
// buffer holding the lists of every gather and scatter recorded since the last submit,
// each at its own offset (`list_off`, `seg_off`), written by the host right before the
// submit, the same way the uniform arena is. A second call with other ids therefore never
// overwrites the ids of a first one recorded before it.
//
// Equation, gather (entry point `gather_rows`): dense[p, j] = table[ids[p], j],
//   with ids[p] = index[list_off + p], for p < rows (= the id count).
//
// Equation, scatter-add (entry point `scatter_add_rows`): table[ids[p], j] += dense[p, j],
// rows sharing an id added in increasing p, starting from the table's value: the same
// additions in the same order as the CPU backend, so the results are bit-identical and no
// float atomics are needed. The host sorts the positions by (id, p) and splits them into
// segments, one per distinct id:
//   order[k] = index[list_off + k]         positions sorted by (id, p), k < id count
//   segment s < rows (= distinct ids):     id = index[seg_off + 2s],
//                                          positions order[index[seg_off + 2s + 1] ..
//                                                           index[seg_off + 2s + 3]]
//   (the pair after the last segment is a sentinel whose second word is the id count).
// One invocation owns one (segment, column): it loads the table value, adds the dense
// rows of its segment in increasing p, and stores once. Distinct segments touch distinct
// table rows, so no two invocations write the same element.
//
// Bindings (group 0):
//   0  uniform               dims  : RowDims (mirrors `RowDims` in crates/sclstm-wgpu/src/uniforms.rs;
//                                    bound with a dynamic offset into the backend's uniform arena)
//   1  storage, read         index : array<u32>  the index arena (ids; sorted positions and segments)
//   gather_rows:
//   2  storage, read         table : array<f32>
//   3  storage, read_write   dense : array<f32>  (only the W-wide windows of rows p < rows written)
//   scatter_add_rows:
//   2  storage, read         dense : array<f32>
//   3  storage, read_write   table : array<f32>  (only the W-wide windows of indexed rows written)
//
// Workgroup: 256 invocations along x, one per (row, column), column fastest, so adjacent
// invocations touch adjacent elements of one row. Dispatch: G = ceil(rows·W / 256)
// workgroups folded as (min(G, 65535), ceil(G / 65535), 1); invocation index =
// (wg.y·nwg.x + wg.x)·256 + lid.x, row = index / W, column = index % W.

struct RowDims {
    width: u32,
    rows: u32,
    table_stride: u32,
    table_off: u32,
    dense_stride: u32,
    dense_off: u32,
    list_off: u32,
    seg_off: u32,
}

@group(0) @binding(0) var<uniform> dims: RowDims;

// The index arena, shared by both entry points (read-only in both).
@group(0) @binding(1) var<storage, read> index: array<u32>;

// gather_rows: the table is read, the dense buffer written.
@group(0) @binding(2) var<storage, read> gather_table: array<f32>;
@group(0) @binding(3) var<storage, read_write> gather_dense: array<f32>;

// scatter_add_rows: the dense buffer is read, the table accumulated into.
@group(0) @binding(2) var<storage, read> scatter_dense: array<f32>;
@group(0) @binding(3) var<storage, read_write> scatter_table: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn gather_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    if (idx >= dims.rows * dims.width) {
        return;
    }
    let p = idx / dims.width;
    let j = idx % dims.width;
    let id = index[dims.list_off + p];
    gather_dense[dims.dense_off + p * dims.dense_stride + j] =
        gather_table[dims.table_off + id * dims.table_stride + j];
}

@compute @workgroup_size(256, 1, 1)
fn scatter_add_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    if (idx >= dims.rows * dims.width) {
        return;
    }
    let s = idx / dims.width;
    let j = idx % dims.width;
    let id = index[dims.seg_off + 2u * s];
    let start = index[dims.seg_off + 2u * s + 1u];
    let end = index[dims.seg_off + 2u * s + 3u];
    let at = dims.table_off + id * dims.table_stride + j;
    var acc = scatter_table[at];
    for (var k = start; k < end; k++) {
        let p = index[dims.list_off + k];
        acc = acc + scatter_dense[dims.dense_off + p * dims.dense_stride + j];
    }
    scatter_table[at] = acc;
}
