// lstm_cell.wgsl: LSTM cell forward and backward for one time step (paper Eq. 1).
//
// Layouts (flat, row-major, packed sequences; see crates/sclstm-core/src/backend.rs),
// with H = hidden, gate order i, f, g (= ĉ), o. Only real tokens have rows (no padding,
// no mask); the uniform names the step's rows:
//   step buffers   gates, d_gates (4H wide), tanh_c (H wide): row step + r
//   state buffers  c, h, d_h, d_c (H wide): state before the step at row prev + r,
//                  state after it at row next + r (next ≥ prev + rows: no overlap)
// One invocation owns one (r, j) with r < rows, j < H; no other row is touched.
//
// Equation, forward (entry point `lstm_cell_fwd`):
//   i = σ(gates_i), f = σ(gates_f), g = tanh(gates_g), o = σ(gates_o)
//   c_t = i·g + f·c_{t-1},  h_t = o·tanh(c_t)
//   gates[step] ← [i, f, g, o],  c[next] ← c_t,  tanh_c[step] ← tanh(c_t),  h[next] ← h_t
// Forward bindings (group 0):
//   0 uniform CellDims · 1 gates rw · 2 c rw (reads row prev + r, writes row next + r)
//   3 h rw · 4 tanh_c rw
//
// Backward (entry point `lstm_cell_bwd`), with the saved activations, dh = d_h[next]:
//   dc = d_c[next] + dh·o·(1 - tanh(c_t)²)        (d_c[next] holds every other path into c_t)
//   d_i = dc·g·i(1-i)   d_f = dc·c_{t-1}·f(1-f)   d_g = dc·i·(1-g²)   d_o = dh·tanh(c_t)·o(1-o)
//   d_gates[step] ← [d_i, d_f, d_g, d_o] (overwrite),   d_c[prev] += f·dc (accumulate)
// Backward bindings (group 0):
//   0 uniform CellDims · 1 gates read · 2 c read (row prev + r) · 3 tanh_c read
//   4 d_h read · 5 d_c rw (reads row next + r, adds to row prev + r) · 6 d_gates rw
//
// Binding 0 is bound with a dynamic offset into the backend's uniform arena (one slot
// per dispatch), so one bind group serves every step on the same buffers.
//
// Workgroup: 256 invocations along x. Dispatch: G = ceil(rows·H / 256) workgroups folded
// as (min(G, 65535), ceil(G / 65535), 1); invocation index = (wg.y·nwg.x + wg.x)·256 + lid.x.

struct CellDims {
    rows: u32,
    hidden: u32,
    step: u32,
    prev: u32,
    next: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> dims: CellDims;

@group(0) @binding(1) var<storage, read_write> fwd_gates: array<f32>;
@group(0) @binding(2) var<storage, read_write> fwd_c: array<f32>;
@group(0) @binding(3) var<storage, read_write> fwd_h: array<f32>;
@group(0) @binding(4) var<storage, read_write> fwd_tanh_c: array<f32>;

@group(0) @binding(1) var<storage, read> bwd_gates: array<f32>;
@group(0) @binding(2) var<storage, read> bwd_c: array<f32>;
@group(0) @binding(3) var<storage, read> bwd_tanh_c: array<f32>;
@group(0) @binding(4) var<storage, read> bwd_d_h: array<f32>;
@group(0) @binding(5) var<storage, read_write> bwd_d_c: array<f32>;
@group(0) @binding(6) var<storage, read_write> bwd_d_gates: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn lstm_cell_fwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    let h_dim = dims.hidden;
    if (idx >= dims.rows * h_dim) {
        return;
    }
    // idx = r·H + j. Rows are contiguous, so element (r, j) of an H-wide region starting
    // at row `first` is first·H + idx; the gates are 4H wide.
    let g0 = (dims.step + idx / h_dim) * 4u * h_dim + idx % h_dim;
    let cur = dims.step * h_dim + idx;
    let prev = dims.prev * h_dim + idx;
    let next = dims.next * h_dim + idx;
    let i_gate = sigmoid(fwd_gates[g0]);
    let f_gate = sigmoid(fwd_gates[g0 + h_dim]);
    let g_gate = tanh_stable(fwd_gates[g0 + 2u * h_dim]);
    let o_gate = sigmoid(fwd_gates[g0 + 3u * h_dim]);
    let c_t = i_gate * g_gate + f_gate * fwd_c[prev];
    let tc = tanh_stable(c_t);
    fwd_gates[g0] = i_gate;
    fwd_gates[g0 + h_dim] = f_gate;
    fwd_gates[g0 + 2u * h_dim] = g_gate;
    fwd_gates[g0 + 3u * h_dim] = o_gate;
    fwd_c[next] = c_t;
    fwd_tanh_c[cur] = tc;
    fwd_h[next] = o_gate * tc;
}

@compute @workgroup_size(256, 1, 1)
fn lstm_cell_bwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    let h_dim = dims.hidden;
    if (idx >= dims.rows * h_dim) {
        return;
    }
    // idx = r·H + j. Rows are contiguous, so element (r, j) of an H-wide region starting
    // at row `first` is first·H + idx; the gates are 4H wide.
    let g0 = (dims.step + idx / h_dim) * 4u * h_dim + idx % h_dim;
    let cur = dims.step * h_dim + idx;
    let prev = dims.prev * h_dim + idx;
    let next = dims.next * h_dim + idx;
    let i_gate = bwd_gates[g0];
    let f_gate = bwd_gates[g0 + h_dim];
    let g_gate = bwd_gates[g0 + 2u * h_dim];
    let o_gate = bwd_gates[g0 + 3u * h_dim];
    let tc = bwd_tanh_c[cur];
    let dh = bwd_d_h[next];
    let dc = bwd_d_c[next] + dh * o_gate * (1.0 - tc * tc);
    bwd_d_gates[g0] = dc * g_gate * i_gate * (1.0 - i_gate);
    bwd_d_gates[g0 + h_dim] = dc * bwd_c[prev] * f_gate * (1.0 - f_gate);
    bwd_d_gates[g0 + 2u * h_dim] = dc * i_gate * (1.0 - g_gate * g_gate);
    bwd_d_gates[g0 + 3u * h_dim] = dh * tc * o_gate * (1.0 - o_gate);
    bwd_d_c[prev] += f_gate * dc;
}
