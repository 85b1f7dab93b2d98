// task_gate.wgsl: SC-LSTM task gate forward and backward for one time step t (paper Eq. 2).
//
// Layouts (flat, row-major, time-major; see crates/sclstm-core/src/backend.rs), with
// B = batch, H = hidden, for one task k:
//   o_k, d_o_k, tanh_c : (T, B, H)     q_k, d_q_k, d_c : (T+1, B, H), slot t+1 holds step t
//   mask               : (T, B), 1 inside a sentence, else 0
// One invocation owns one (b, j) with b < B, j < H; only step t is touched.
//
// Equation, forward (entry point `task_gate_fwd`), m = mask[t, b]:
//   o^k_t = σ(U_k x_t + b_k + W_k q^k_{t-1})   (pre-activation already in o_k[t])
//   q^k_t = o^k_t · tanh(c_t)
//   o_k[t] ← m·o^k_t (in place),  q_k[t+1] ← m·q^k_t
// Forward bindings (group 0):
//   0 uniform CellDims · 1 o_k rw · 2 q_k rw · 3 tanh_c read · 4 mask read
//
// Backward (entry point `task_gate_bwd`), dq = d_q_k[t+1], o = o_k[t] (saved σ):
//   d_o_k[t]  ← m·dq·tanh(c_t)·o(1-o)           (overwrite)
//   d_c[t+1] += m·dq·o·(1 - tanh(c_t)²)          (accumulate: the path c_t → q^k_t)
// Backward bindings (group 0):
//   0 uniform CellDims · 1 o_k read · 2 tanh_c read · 3 mask read · 4 d_q_k read
//   5 d_o_k rw · 6 d_c rw
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

@group(0) @binding(1) var<storage, read_write> fwd_o_k: array<f32>;
@group(0) @binding(2) var<storage, read_write> fwd_q_k: array<f32>;
@group(0) @binding(3) var<storage, read> fwd_tanh_c: array<f32>;
@group(0) @binding(4) var<storage, read> fwd_mask: array<f32>;

@group(0) @binding(1) var<storage, read> bwd_o_k: array<f32>;
@group(0) @binding(2) var<storage, read> bwd_tanh_c: array<f32>;
@group(0) @binding(3) var<storage, read> bwd_mask: array<f32>;
@group(0) @binding(4) var<storage, read> bwd_d_q_k: array<f32>;
@group(0) @binding(5) var<storage, read_write> bwd_d_o_k: array<f32>;
@group(0) @binding(6) var<storage, read_write> bwd_d_c: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn task_gate_fwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    let bh = dims.batch * dims.hidden;
    if (idx >= bh) {
        return;
    }
    let m = fwd_mask[dims.t * dims.batch + idx / dims.hidden];
    let cur = dims.t * bh + idx;
    let o = sigmoid(fwd_o_k[cur]);
    fwd_o_k[cur] = m * o;
    fwd_q_k[cur + bh] = m * o * fwd_tanh_c[cur];
}

@compute @workgroup_size(256, 1, 1)
fn task_gate_bwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    let bh = dims.batch * dims.hidden;
    if (idx >= bh) {
        return;
    }
    let m = bwd_mask[dims.t * dims.batch + idx / dims.hidden];
    let cur = dims.t * bh + idx;
    if (m == 0.0) {
        bwd_d_o_k[cur] = 0.0;
        return;
    }
    let o = bwd_o_k[cur];
    let tc = bwd_tanh_c[cur];
    let dq = bwd_d_q_k[cur + bh];
    bwd_d_o_k[cur] = m * dq * tc * o * (1.0 - o);
    bwd_d_c[cur + bh] += m * dq * o * (1.0 - tc * tc);
}
