// task_gate.wgsl: SC-LSTM task gate forward and backward for one time step (paper Eq. 2).
//
// Layouts (flat, row-major, packed sequences; see crates/sclstm-core/src/backend.rs),
// with H = hidden, for one task k. Only real tokens have rows (no padding, no mask);
// the uniform names the step's rows:
//   step buffers   o_k, d_o_k, tanh_c (H wide): row step + r
//   state buffers  q_k, d_q_k, d_c (H wide): the state after the step at row next + r
// One invocation owns one (r, j) with r < rows, j < H; no other row is touched (the
// task gate never reads the state before the step: `prev` is unused here).
//
// Equation, forward (entry point `task_gate_fwd`):
//   o^k_t = σ(U_k x_t + b_k + W_k q^k_{t-1})   (pre-activation already in o_k[step])
//   q^k_t = o^k_t · tanh(c_t)
//   o_k[step] ← o^k_t (in place),  q_k[next] ← q^k_t
// Forward bindings (group 0):
//   0 uniform CellDims · 1 o_k rw · 2 q_k rw · 3 tanh_c read
//
// Backward (entry point `task_gate_bwd`), dq = d_q_k[next], o = o_k[step] (saved σ):
//   d_o_k[step] ← dq·tanh(c_t)·o(1-o)            (overwrite)
//   d_c[next]  += dq·o·(1 - tanh(c_t)²)           (accumulate: the path c_t → q^k_t)
// Backward bindings (group 0):
//   0 uniform CellDims · 1 o_k read · 2 tanh_c read · 3 d_q_k read · 4 d_o_k rw
//   5 d_c rw
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

@group(0) @binding(1) var<storage, read_write> fwd_o_k: array<f32>;
@group(0) @binding(2) var<storage, read_write> fwd_q_k: array<f32>;
@group(0) @binding(3) var<storage, read> fwd_tanh_c: array<f32>;

@group(0) @binding(1) var<storage, read> bwd_o_k: array<f32>;
@group(0) @binding(2) var<storage, read> bwd_tanh_c: array<f32>;
@group(0) @binding(3) var<storage, read> bwd_d_q_k: array<f32>;
@group(0) @binding(4) var<storage, read_write> bwd_d_o_k: array<f32>;
@group(0) @binding(5) var<storage, read_write> bwd_d_c: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn task_gate_fwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    if (idx >= dims.rows * dims.hidden) {
        return;
    }
    let cur = dims.step * dims.hidden + idx;
    let next = dims.next * dims.hidden + idx;
    let o = sigmoid(fwd_o_k[cur]);
    fwd_o_k[cur] = o;
    fwd_q_k[next] = o * fwd_tanh_c[cur];
}

@compute @workgroup_size(256, 1, 1)
fn task_gate_bwd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = flat_index(wg, nwg, lid);
    if (idx >= dims.rows * dims.hidden) {
        return;
    }
    let cur = dims.step * dims.hidden + idx;
    let next = dims.next * dims.hidden + idx;
    let o = bwd_o_k[cur];
    let tc = bwd_tanh_c[cur];
    let dq = bwd_d_q_k[next];
    bwd_d_o_k[cur] = dq * tc * o * (1.0 - o);
    bwd_d_c[next] += dq * o * (1.0 - tc * tc);
}
