// common.wgsl: definitions every pointwise and row kernel shares, joined in front of
// lstm_cell.wgsl, task_gate.wgsl and rows.wgsl when they are compiled (see
// crates/sclstm-wgpu/src/context.rs, `Shader::source`): the workgroup size, the flat
// invocation index of a folded 2-D grid, and numerically stable activations.

const WG: u32 = 256u;

// The invocation's index in a grid folded into (x, y) workgroups of WG lanes.
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid.x;
}

// σ(x) without overflow for large |x|.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// tanh(x) without the inf/inf of the exponential form for large |x|, and with a
// series near 0 where 1 - e^{-2|x|} would cancel.
fn tanh_stable(x: f32) -> f32 {
    let ax = abs(x);
    if (ax < 0.0625) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0)));
    }
    let e = exp(-2.0 * ax);
    return sign(x) * (1.0 - e) / (1.0 + e);
}
