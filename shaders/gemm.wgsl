// gemm.wgsl: tiled matrix product with a fused bias, for the gate projections
// (`U x_t + b` for all time steps at once, the per-step `W h_{t-1}`) and the
// weight-gradient products of the backward pass.
//
// Equation: C[c_off..] (+)= op(A[a_off..]) · op(B[b_off..]) (+ bias), every operand
// dense and row-major:
//   op(A) is m × k, stored k × m when trans_a = 1   (A[i, p] = a[a_off + p*m + i])
//   op(B) is k × n, stored n × k when trans_b = 1   (B[p, j] = b[b_off + j*k + p])
//   C     is m × n                                  (C[i, j] = c[c_off + i*n + j])
//   bias  has n elements, added to every row when has_bias = 1.
// With accumulate = 1 the result is added to C, otherwise C is overwritten.
// Elements of `c` outside the m × n block at c_off are never written.
//
// Bindings (group 0):
//   0  uniform               dims : GemmDims (mirrors `GemmDims` in crates/sclstm-wgpu/src/uniforms.rs)
//   1  storage, read         a    : array<f32>
//   2  storage, read         b    : array<f32>
//   3  storage, read         bias : array<f32>  (a 1-element dummy when has_bias = 0)
//   4  storage, read_write   c    : array<f32>
//
// Workgroup: 16 × 16 invocations computing one 64 × 64 tile of C; each invocation owns
// a 4 × 4 register block (rows ly + 16·r, columns lx + 16·s, so stores are coalesced).
// The k axis is walked in slices of 16 staged in workgroup memory (2 × 4 KiB).
// Dispatch: (ceil(n / 64), ceil(m / 64), 1).

struct GemmDims {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    trans_a: u32,
    trans_b: u32,
    accumulate: u32,
    has_bias: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> dims: GemmDims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const THREADS: u32 = 256u;

// tile_a[p * BM + i] = op(A)[row0 + i, k0 + p]; tile_b[p * BN + j] = op(B)[k0 + p, col0 + j].
var<workgroup> tile_a: array<f32, 1024>;
var<workgroup> tile_b: array<f32, 1024>;

fn load_a(i: u32, p: u32) -> f32 {
    if (i >= dims.m || p >= dims.k) {
        return 0.0;
    }
    if (dims.trans_a == 1u) {
        return a[dims.a_off + p * dims.m + i];
    }
    return a[dims.a_off + i * dims.k + p];
}

fn load_b(p: u32, j: u32) -> f32 {
    if (p >= dims.k || j >= dims.n) {
        return 0.0;
    }
    if (dims.trans_b == 1u) {
        return b[dims.b_off + j * dims.k + p];
    }
    return b[dims.b_off + p * dims.n + j];
}

@compute @workgroup_size(16, 16, 1)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    var acc: array<f32, 16>;
    for (var r = 0u; r < 16u; r++) {
        acc[r] = 0.0;
    }
    let n_slices = (dims.k + BK - 1u) / BK;
    for (var slice = 0u; slice < n_slices; slice++) {
        let k0 = slice * BK;
        // Stage both slices; consecutive invocations read consecutive addresses of the
        // stored matrix whichever way it is transposed.
        for (var l = 0u; l < 4u; l++) {
            let e = li + l * THREADS;
            if (dims.trans_a == 1u) {
                let p = e / BM;
                let i = e % BM;
                tile_a[p * BM + i] = load_a(row0 + i, k0 + p);
            } else {
                let i = e / BK;
                let p = e % BK;
                tile_a[p * BM + i] = load_a(row0 + i, k0 + p);
            }
            if (dims.trans_b == 1u) {
                let j = e / BK;
                let p = e % BK;
                tile_b[p * BN + j] = load_b(k0 + p, col0 + j);
            } else {
                let p = e / BN;
                let j = e % BN;
                tile_b[p * BN + j] = load_b(k0 + p, col0 + j);
            }
        }
        workgroupBarrier();
        for (var p = 0u; p < BK; p++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var r = 0u; r < 4u; r++) {
                av[r] = tile_a[p * BM + lid.y + 16u * r];
                bv[r] = tile_b[p * BN + lid.x + 16u * r];
            }
            for (var r = 0u; r < 4u; r++) {
                for (var s = 0u; s < 4u; s++) {
                    acc[r * 4u + s] = fma(av[r], bv[s], acc[r * 4u + s]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let i = row0 + lid.y + 16u * r;
        for (var s = 0u; s < 4u; s++) {
            let j = col0 + lid.x + 16u * s;
            if (i < dims.m && j < dims.n) {
                var v = acc[r * 4u + s];
                if (dims.has_bias == 1u) {
                    v += bias[j];
                }
                let idx = dims.c_off + i * dims.n + j;
                if (dims.accumulate == 1u) {
                    c[idx] += v;
                } else {
                    c[idx] = v;
                }
            }
        }
    }
}
