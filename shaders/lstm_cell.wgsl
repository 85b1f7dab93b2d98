// lstm_cell.wgsl: LSTM cell forward and backward for one time step t (paper Eq. 1).
//
// Layouts (flat, row-major, time-major; see crates/sclstm-core/src/backend.rs), with
// B = batch, H = hidden, gate order i, f, g (= ĉ), o:
//   gates, d_gates : (T, B, 4H)     c, h, d_h, d_c : (T+1, B, H), slot t+1 holds step t
//   tanh_c         : (T, B, H)      mask           : (T, B), 1 inside a sentence, else 0
// One invocation owns one (b, j) with b < B, j < H; only step t (slots t / t+1) is touched.
//
// Equation, forward (entry point `lstm_cell_fwd`), m = mask[t, b]:
//   i = σ(gates_i), f = σ(gates_f), g = tanh(gates_g), o = σ(gates_o)
//   c_t = i·g + f·c_{t-1},  h_t = o·tanh(c_t)
//   gates[t] ← m·[i, f, g, o],  c[t+1] ← m·c_t,  tanh_c[t] ← m·tanh(c_t),  h[t+1] ← m·h_t
// Forward bindings (group 0):
//   0 uniform CellDims · 1 gates rw · 2 c rw (reads slot t, writes slot t+1) · 3 h rw
//   4 tanh_c rw · 5 mask read
//
// Backward (entry point `lstm_cell_bwd`), with the saved activations, dh = d_h[t+1]:
//   dc = d_c[t+1] + dh·o·(1 - tanh(c_t)²)        (d_c[t+1] holds every other path into c_t)
//   d_i = dc·g·i(1-i)   d_f = dc·c_{t-1}·f(1-f)   d_g = dc·i·(1-g²)   d_o = dh·tanh(c_t)·o(1-o)
//   d_gates[t] ← m·[d_i, d_f, d_g, d_o] (overwrite),   d_c[t] += m·f·dc (accumulate)
// Backward bindings (group 0):
//   0 uniform CellDims · 1 gates read · 2 c read · 3 tanh_c read · 4 mask read
//   5 d_h read · 6 d_c rw (reads slot t+1, adds to slot t) · 7 d_gates rw
//
// Binding 0 is bound with a dynamic offset into the backend's uniform arena (one slot
// per dispatch), so one bind group serves every step on the same buffers.
//
// Workgroup: 256 invocations along x. Dispatch: G = ceil(B·H / 256) workgroups folded as
// (min(G, 65535), ceil(G / 65535), 1); invocation index = (wg.y·nwg.x + wg.x)·256 + lid.x.

struct CellDims {
    t: u32,
    batch: u32,
    hidden: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> dims: CellDims;

@group(0) @binding(1) var<storage, read_write> fwd_gates: array<f32>;
@group(0) @binding(2) var<storage, read_write> fwd_c: array<f32>;
@group(0) @binding(3) var<storage, read_write> fwd_h: array<f32>;
@group(0) @binding(4) var<storage, read_write> fwd_tanh_c: array<f32>;
@group(0) @binding(5) var<storage, read> fwd_mask: array<f32>;

@group(0) @binding(1) var<storage, read> bwd_gates: array<f32>;
@group(0) @binding(2) var<storage, read> bwd_c: array<f32>;
@group(0) @binding(3) var<storage, read> bwd_tanh_c: array<f32>;
@group(0) @binding(4) var<storage, read> bwd_mask: array<f32>;
@group(0) @binding(5) var<storage, read> bwd_d_h: array<f32>;
@group(0) @binding(6) var<storage, read_write> bwd_d_c: array<f32>;
@group(0) @binding(7) var<storage, read_write> bwd_d_gates: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn lstm_cell_fwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    let bh = dims.batch * dims.hidden;
    if (idx >= bh) {
        return;
    }
    let h_dim = dims.hidden;
    let bi = idx / h_dim;
    let j = idx % h_dim;
    let m = fwd_mask[dims.t * dims.batch + bi];
    let g0 = (dims.t * dims.batch + bi) * 4u * h_dim + j;
    let i_gate = sigmoid(fwd_gates[g0]);
    let f_gate = sigmoid(fwd_gates[g0 + h_dim]);
    let g_gate = tanh_stable(fwd_gates[g0 + 2u * h_dim]);
    let o_gate = sigmoid(fwd_gates[g0 + 3u * h_dim]);
    let prev = dims.t * bh + idx;
    let next = prev + bh;
    let c_t = i_gate * g_gate + f_gate * fwd_c[prev];
    let tc = tanh_stable(c_t);
    fwd_gates[g0] = m * i_gate;
    fwd_gates[g0 + h_dim] = m * f_gate;
    fwd_gates[g0 + 2u * h_dim] = m * g_gate;
    fwd_gates[g0 + 3u * h_dim] = m * o_gate;
    fwd_c[next] = m * c_t;
    fwd_tanh_c[prev] = m * tc;
    fwd_h[next] = m * o_gate * tc;
}

@compute @workgroup_size(256, 1, 1)
fn lstm_cell_bwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    let bh = dims.batch * dims.hidden;
    if (idx >= bh) {
        return;
    }
    let h_dim = dims.hidden;
    let bi = idx / h_dim;
    let j = idx % h_dim;
    let m = bwd_mask[dims.t * dims.batch + bi];
    let g0 = (dims.t * dims.batch + bi) * 4u * h_dim + j;
    let prev = dims.t * bh + idx;
    let next = prev + bh;
    if (m == 0.0) {
        bwd_d_gates[g0] = 0.0;
        bwd_d_gates[g0 + h_dim] = 0.0;
        bwd_d_gates[g0 + 2u * h_dim] = 0.0;
        bwd_d_gates[g0 + 3u * h_dim] = 0.0;
        return;
    }
    let i_gate = bwd_gates[g0];
    let f_gate = bwd_gates[g0 + h_dim];
    let g_gate = bwd_gates[g0 + 2u * h_dim];
    let o_gate = bwd_gates[g0 + 3u * h_dim];
    let tc = bwd_tanh_c[prev];
    let dh = bwd_d_h[next];
    let dc = bwd_d_c[next] + dh * o_gate * (1.0 - tc * tc);
    bwd_d_gates[g0] = m * dc * g_gate * i_gate * (1.0 - i_gate);
    bwd_d_gates[g0 + h_dim] = m * dc * bwd_c[prev] * f_gate * (1.0 - f_gate);
    bwd_d_gates[g0 + 2u * h_dim] = m * dc * i_gate * (1.0 - g_gate * g_gate);
    bwd_d_gates[g0 + 3u * h_dim] = m * dh * tc * o_gate * (1.0 - o_gate);
    bwd_d_c[prev] += m * f_gate * dc;
}
