// gemm.wgsl: matrix product with a fused bias, for the gate projections
// (`U x_t + b` for all time steps at once, the per-step `W h_{t-1}`) and the
// weight-gradient products of the backward pass. Two entry points with the same
// bindings and semantics: `gemm` (64 × 64 tiles, any m) and `gemm_small_m` (16-row
// tiles with k split four ways, chosen by the host when m is small, e.g. the per-step
// recurrent products where m = batch).
//
// Equation: C[c_off..] (+)= op(A[a_off..]) · op(B[b_off..]) (+ bias), every operand
// dense and row-major:
//   op(A) is m × k, stored k × m when trans_a = 1   (A[i, p] = a[a_off + p*m + i])
//   op(B) is k × n, stored n × k when trans_b = 1   (B[p, j] = b[b_off + j*k + p])
//   C     is m × n                                  (C[i, j] = c[c_off + i*n + j])
//   bias  has n elements, added to every row when has_bias = 1.
// With accumulate = 1 the result is added to C, otherwise C is overwritten.
// Elements of `c` outside the m × n block at c_off are never written. The host never
// dispatches with m = 0 or n = 0.
//
// Bindings (group 0, both entry points):
//   0  uniform               dims : GemmDims (mirrors `GemmDims` in crates/sclstm-wgpu/src/uniforms.rs;
//                                   bound with a dynamic offset into the backend's uniform arena)
//   1  storage, read         a    : array<f32>
//   2  storage, read         b    : array<f32>
//   3  storage, read         bias : array<f32>  (a 1-element dummy when has_bias = 0)
//   4  storage, read_write   c    : array<f32>
//
// `gemm` workgroup: 16 × 16 invocations computing one 64 × 64 tile of C; each invocation
// owns a 4 × 4 register block (rows ly + 16·r, columns lx + 16·s, so stores are
// coalesced). The k axis is walked in slices of 16 staged in workgroup memory (2 × 4 KiB).
// Dispatch: (ceil(n / 64), ceil(m / 64), 1).
//
// `gemm_small_m` workgroup: 64 × 4 invocations computing one 16 × 64 tile of C. Invocation
// (lx, ly) owns column col0 + lx and the ly-th quarter of the k axis, and keeps all 16
// rows of that column in four vec4 accumulators: per k step it reads one element of
// op(B) (consecutive lx read consecutive addresses when trans_b = 0) and 16 elements of
// op(A) (the same for every lx, so they are broadcast). No workgroup memory is used in
// the k loop; the four partial sums meet once in workgroup memory (4 × 16 × 64 f32 =
// 16 KiB), and invocation (lx, ly) adds them up for rows 4·ly..4·ly+3 and stores.
// Rows past m read row m-1 (clamped, never stored), so the k loop has no branches.
// Dispatch: (ceil(n / 64), ceil(m / 16), 1).

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

const SM_ROWS: u32 = 16u;
const SM_COLS: u32 = 64u;
const SM_SPLIT: u32 = 4u;

// partial[(s * SM_ROWS + r) * SM_COLS + x]: k-quarter s's sum for row r, column col0 + x.
var<workgroup> partial: array<f32, 4096>;

// Stores rows 4·q..4·q+3 of one k-quarter's sums.
fn stash(base: u32, q: u32, v: vec4<f32>) {
    let at = base + 4u * q * SM_COLS;
    partial[at] = v.x;
    partial[at + SM_COLS] = v.y;
    partial[at + 2u * SM_COLS] = v.z;
    partial[at + 3u * SM_COLS] = v.w;
}

@compute @workgroup_size(64, 4, 1)
fn gemm_small_m(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row0 = wg.y * SM_ROWS;
    let j = wg.x * SM_COLS + lid.x;
    // Strides of op(A) (per row, per k) and op(B) (per k, per column) in storage.
    var a_row = dims.k;
    var a_step = 1u;
    if (dims.trans_a == 1u) {
        a_row = 1u;
        a_step = dims.m;
    }
    var b_step = dims.n;
    var b_col = 1u;
    if (dims.trans_b == 1u) {
        b_step = 1u;
        b_col = dims.k;
    }
    // This invocation's quarter of the k axis: [p0, p1).
    let chunk = (dims.k + SM_SPLIT - 1u) / SM_SPLIT;
    let p0 = min(lid.y * chunk, dims.k);
    let p1 = min(p0 + chunk, dims.k);
    // Row r reads A row min(row0 + r, m - 1): padding rows repeat the last real row.
    let last = dims.m - 1u;
    let rows = vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(row0);
    let a0 = dims.a_off + p0 * a_step;
    let ia0 = vec4<u32>(a0) + min(rows, vec4<u32>(last)) * a_row;
    let ia1 = vec4<u32>(a0) + min(rows + vec4<u32>(4u), vec4<u32>(last)) * a_row;
    let ia2 = vec4<u32>(a0) + min(rows + vec4<u32>(8u), vec4<u32>(last)) * a_row;
    let ia3 = vec4<u32>(a0) + min(rows + vec4<u32>(12u), vec4<u32>(last)) * a_row;
    var ib = dims.b_off + min(j, dims.n - 1u) * b_col + p0 * b_step;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var ap = 0u;
    for (var p = p0; p < p1; p++) {
        let bv = vec4<f32>(b[ib]);
        acc0 = fma(vec4<f32>(a[ia0.x + ap], a[ia0.y + ap], a[ia0.z + ap], a[ia0.w + ap]), bv, acc0);
        acc1 = fma(vec4<f32>(a[ia1.x + ap], a[ia1.y + ap], a[ia1.z + ap], a[ia1.w + ap]), bv, acc1);
        acc2 = fma(vec4<f32>(a[ia2.x + ap], a[ia2.y + ap], a[ia2.z + ap], a[ia2.w + ap]), bv, acc2);
        acc3 = fma(vec4<f32>(a[ia3.x + ap], a[ia3.y + ap], a[ia3.z + ap], a[ia3.w + ap]), bv, acc3);
        ap += a_step;
        ib += b_step;
    }
    let base = lid.y * SM_ROWS * SM_COLS + lid.x;
    stash(base, 0u, acc0);
    stash(base, 1u, acc1);
    stash(base, 2u, acc2);
    stash(base, 3u, acc3);
    workgroupBarrier();
    // Invocation (lx, ly) finishes rows 4·ly..4·ly+3 of column j, quarters in order.
    for (var q = 0u; q < 4u; q++) {
        let r = 4u * lid.y + q;
        let i = row0 + r;
        if (i < dims.m && j < dims.n) {
            var v = 0.0;
            for (var s = 0u; s < SM_SPLIT; s++) {
                v += partial[(s * SM_ROWS + r) * SM_COLS + lid.x];
            }
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
