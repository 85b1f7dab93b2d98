//! [`WgpuBackend`]: the `Backend` trait on wgpu buffers, one launcher per shader family.

use std::sync::Mutex;

use sclstm_core::{Backend, CellStep, Gemm, NumError};
use wgpu::util::DeviceExt;

use crate::WgpuError;
use crate::context::{AdapterSummary, Shader, WgpuContext};
use crate::uniforms::{CellDims, GemmDims};

/// Invocations per workgroup of the pointwise kernels (`@workgroup_size(256)`).
const POINTWISE_WG: u64 = 256;
/// Output tile edge of the gemm kernel (`BM = BN = 64` in `shaders/gemm.wgsl`).
const GEMM_TILE: u64 = 64;
/// Dispatches recorded before the pending encoder is submitted without waiting: the
/// number of slots in the uniform arena.
const UNIFORM_SLOTS: u64 = 4096;
/// Bytes per uniform slot: the largest uniform struct, rounded up to the device's
/// `min_uniform_buffer_offset_alignment` at construction (256 by default).
const UNIFORM_SLOT_MIN: u64 = 256;

/// A device buffer of `f32` with its logical length in elements.
///
/// The wgpu buffer holds at least one element, since wgpu rejects empty bindings.
#[derive(Debug)]
pub struct WgpuBuf {
    buffer: wgpu::Buffer,
    len: usize,
}

impl WgpuBuf {
    /// Logical length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying wgpu buffer (usages: storage, copy source, copy destination).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// Work recorded but not yet submitted.
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    /// Uniform bytes of the recorded dispatches, one slot each, uploaded to the arena
    /// just before the encoder is submitted.
    uniforms: Vec<u8>,
}

/// The wgpu backend: every kernel call is recorded into one pending command encoder,
/// submitted at [`Backend::sync`] or [`Backend::download`] (and every 4096
/// dispatches), so a layer's whole time loop becomes one submission with no readback
/// per step.
///
/// Per-dispatch uniforms (dimensions, offsets, the step `t`) live in one arena buffer,
/// one aligned slot per dispatch of the pending encoder. The slots are written with a
/// single `queue.write_buffer` right before the encoder is submitted: such a write
/// lands before the whole submission runs, so each dispatch needs its own slot, and a
/// full arena forces a submit before slots are reused.
pub struct WgpuBackend {
    ctx: WgpuContext,
    pending: Mutex<Pending>,
    arena: wgpu::Buffer,
    slot_bytes: u64,
    /// Bound in place of the bias when a gemm has none.
    dummy: wgpu::Buffer,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl WgpuBackend {
    /// Acquires an adapter (see [`WgpuContext::new`]) and builds the backend on it.
    pub fn new() -> Result<Self, WgpuError> {
        Ok(Self::from_context(WgpuContext::new()?))
    }

    /// Builds the backend on an existing context (for tests or a shared device).
    pub fn from_context(ctx: WgpuContext) -> Self {
        let dummy = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("no bias"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let align = u64::from(ctx.device().limits().min_uniform_buffer_offset_alignment);
        let slot_bytes = UNIFORM_SLOT_MIN.next_multiple_of(align.max(1));
        let arena = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: UNIFORM_SLOTS * slot_bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        WgpuBackend {
            ctx,
            pending: Mutex::new(Pending {
                encoder: None,
                uniforms: Vec::new(),
            }),
            arena,
            slot_bytes,
            dummy,
        }
    }

    /// The device context.
    pub fn context(&self) -> &WgpuContext {
        &self.ctx
    }

    /// Adapter name, device type, API and driver, for printing at start-up.
    pub fn adapter(&self) -> AdapterSummary {
        self.ctx.summary()
    }

    fn device(&self) -> &wgpu::Device {
        self.ctx.device()
    }

    /// Rejects buffers above the per-binding limit: they could never be bound.
    fn check_len(&self, len: usize) -> Result<u64, WgpuError> {
        let bytes = 4 * len.max(1) as u64;
        let max_bytes = self.device().limits().max_storage_buffer_binding_size;
        if bytes > max_bytes {
            return Err(WgpuError::BufferTooLarge { len, max_bytes });
        }
        Ok(bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .expect("internal: pending encoder lock poisoned")
    }

    /// The pending encoder, created if needed.
    fn encoder<'p>(&self, pending: &'p mut Pending) -> &'p mut wgpu::CommandEncoder {
        pending.encoder.get_or_insert_with(|| {
            self.device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("sclstm pending work"),
                })
        })
    }

    /// Records a copy or clear into the pending encoder.
    fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut pending = self.lock();
        f(self.encoder(&mut pending));
    }

    /// Uploads the pending uniforms, then finishes and submits the pending encoder, if
    /// any (does not wait).
    fn submit(&self, pending: &mut Pending) -> Result<(), WgpuError> {
        if let Some(encoder) = pending.encoder.take() {
            let uniforms = std::mem::take(&mut pending.uniforms);
            self.ctx.scoped("submitting recorded work", || {
                if !uniforms.is_empty() {
                    self.ctx.queue().write_buffer(&self.arena, 0, &uniforms);
                }
                self.ctx.queue().submit([encoder.finish()]);
            })?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), WgpuError> {
        self.submit(&mut self.lock())
    }

    fn wait(&self) -> Result<(), WgpuError> {
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| WgpuError::Device {
                what: "waiting for the device",
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// Records one compute dispatch. `uniform` goes to binding 0 (its own arena slot)
    /// and `storage[i]` to binding `i + 1` of group 0.
    fn dispatch(
        &self,
        shader: Shader,
        entry: &'static str,
        uniform: &[u8],
        storage: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) -> Result<(), WgpuError> {
        assert!(
            uniform.len() as u64 <= self.slot_bytes,
            "internal: uniform struct larger than an arena slot"
        );
        let pipeline = self.ctx.pipeline(shader, entry)?;
        let mut pending = self.lock();
        if pending.uniforms.len() as u64 >= UNIFORM_SLOTS * self.slot_bytes {
            self.submit(&mut pending)?;
        }
        let offset = pending.uniforms.len() as u64;
        pending.uniforms.extend_from_slice(uniform);
        pending
            .uniforms
            .resize((offset + self.slot_bytes) as usize, 0);
        let bind_group = self.ctx.scoped(entry, || {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.arena,
                    offset,
                    size: wgpu::BufferSize::new(uniform.len() as u64),
                }),
            }];
            entries.extend(
                storage
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: b.as_entire_binding(),
                    }),
            );
            self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        })?;
        let mut pass =
            self.encoder(&mut pending)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(entry),
                    timestamp_writes: None,
                });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
        Ok(())
    }

    /// Workgroup grid for `count` pointwise invocations (see [`fold_groups`]).
    fn pointwise_groups(&self, op: &'static str, count: usize) -> Result<(u32, u32), WgpuError> {
        let max = self.device().limits().max_compute_workgroups_per_dimension;
        let groups = (count as u64).div_ceil(POINTWISE_WG);
        fold_groups(groups, max).ok_or(WgpuError::TooManyWorkgroups {
            op,
            groups: groups.div_ceil(u64::from(max)),
            max,
        })
    }

    fn cell_dims(s: &CellStep) -> Result<CellDims, WgpuError> {
        Ok(CellDims {
            t: to_u32("cell step t", s.t)?,
            batch: to_u32("cell step batch", s.batch)?,
            hidden: to_u32("cell step hidden", s.hidden)?,
            pad0: 0,
        })
    }
}

/// Lays `groups` workgroups out as rows of at most `max` along x, folded into y (the
/// pointwise shaders recompute the flat index as `(wg.y·nwg.x + wg.x)·256 + lid.x`).
/// `None` when even the folded grid exceeds `max` along y.
fn fold_groups(groups: u64, max: u32) -> Option<(u32, u32)> {
    let x = groups.clamp(1, u64::from(max));
    let y = groups.div_ceil(x);
    let y = u32::try_from(y).ok().filter(|&y| y <= max)?;
    Some((x as u32, y))
}

fn to_u32(what: &'static str, v: usize) -> Result<u32, WgpuError> {
    u32::try_from(v).map_err(|_| WgpuError::Device {
        what,
        message: format!("{v} does not fit the shader's 32-bit indices"),
    })
}

/// Elements a buffer needs to hold `count` elements from `off` (none when `count` is 0).
fn region(off: usize, count: usize) -> usize {
    if count == 0 { 0 } else { off + count }
}

/// Checks that `buf` holds at least `needed` elements.
fn need(op: &'static str, buf: &WgpuBuf, needed: usize) -> Result<(), NumError> {
    if buf.len < needed {
        return Err(NumError::BufferTooSmall {
            op,
            len: buf.len,
            needed,
        });
    }
    Ok(())
}

impl Backend for WgpuBackend {
    type Elem = f32;
    type Buf = WgpuBuf;

    fn name(&self) -> String {
        format!("wgpu {}", self.adapter())
    }

    fn upload(&self, data: &[f32]) -> Result<WgpuBuf, NumError> {
        self.check_len(data.len())?;
        let zero = [0.0f32];
        let contents: &[f32] = if data.is_empty() { &zero } else { data };
        let buffer = self.ctx.scoped("upload", || {
            self.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("sclstm buffer"),
                    contents: bytemuck::cast_slice(contents),
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                })
        })?;
        Ok(WgpuBuf {
            buffer,
            len: data.len(),
        })
    }

    fn write(&self, buf: &mut WgpuBuf, data: &[f32]) -> Result<(), NumError> {
        need("write", buf, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        // A staging copy recorded in the pending encoder keeps program order with the
        // kernels recorded before and after (queue.write_buffer would jump ahead of them).
        let staging = self.ctx.scoped("write", || {
            self.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("sclstm write staging"),
                    contents: bytemuck::cast_slice(data),
                    usage: wgpu::BufferUsages::COPY_SRC,
                })
        })?;
        let bytes = 4 * data.len() as u64;
        self.record(|encoder| {
            encoder.copy_buffer_to_buffer(&staging, 0, &buf.buffer, 0, bytes);
        });
        Ok(())
    }

    fn download(&self, buf: &WgpuBuf) -> Result<Vec<f32>, NumError> {
        if buf.len == 0 {
            return Ok(Vec::new());
        }
        let bytes = 4 * buf.len as u64;
        let staging = self.ctx.scoped("download", || {
            self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("sclstm readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        self.record(|encoder| {
            encoder.copy_buffer_to_buffer(&buf.buffer, 0, &staging, 0, bytes);
        });
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver outlives the poll below; a failed send cannot happen.
            let _ = tx.send(r);
        });
        // Map callbacks only run inside poll.
        self.wait()?;
        let download_error = |message: String| WgpuError::Device {
            what: "download",
            message,
        };
        rx.recv()
            .map_err(|e| download_error(e.to_string()))?
            .map_err(|e| download_error(e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| download_error(e.to_string()))?;
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        Ok(out)
    }

    fn zeros(&self, len: usize) -> Result<WgpuBuf, NumError> {
        let bytes = self.check_len(len)?;
        // WebGPU zero-initializes new buffers.
        let buffer = self.ctx.scoped("zeros", || {
            self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("sclstm buffer"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        Ok(WgpuBuf { buffer, len })
    }

    fn fill_zero(&self, buf: &mut WgpuBuf) -> Result<(), NumError> {
        self.record(|encoder| encoder.clear_buffer(&buf.buffer, 0, None));
        Ok(())
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: &WgpuBuf,
        b: &WgpuBuf,
        bias: Option<&WgpuBuf>,
        c: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        need("gemm (a)", a, region(g.a_off, g.m * g.k))?;
        need("gemm (b)", b, region(g.b_off, g.k * g.n))?;
        need("gemm (c)", c, region(g.c_off, g.m * g.n))?;
        if let Some(bias) = bias {
            need("gemm (bias)", bias, g.n)?;
        }
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let dims = GemmDims {
            m: to_u32("gemm m", g.m)?,
            n: to_u32("gemm n", g.n)?,
            k: to_u32("gemm k", g.k)?,
            a_off: to_u32("gemm a_off", g.a_off)?,
            b_off: to_u32("gemm b_off", g.b_off)?,
            c_off: to_u32("gemm c_off", g.c_off)?,
            trans_a: u32::from(g.trans_a),
            trans_b: u32::from(g.trans_b),
            accumulate: u32::from(g.accumulate),
            has_bias: u32::from(bias.is_some()),
            pad0: 0,
            pad1: 0,
        };
        let max = self.device().limits().max_compute_workgroups_per_dimension;
        let gx = (g.n as u64).div_ceil(GEMM_TILE);
        let gy = (g.m as u64).div_ceil(GEMM_TILE);
        if gx.max(gy) > u64::from(max) {
            return Err(WgpuError::TooManyWorkgroups {
                op: "gemm",
                groups: gx.max(gy),
                max,
            }
            .into());
        }
        let bias = bias.map_or(&self.dummy, |b| &b.buffer);
        self.dispatch(
            Shader::Gemm,
            "gemm",
            bytemuck::bytes_of(&dims),
            &[&a.buffer, &b.buffer, bias, &c.buffer],
            (gx as u32, gy as u32),
        )?;
        Ok(())
    }

    fn lstm_cell_fwd(
        &self,
        s: CellStep,
        gates: &mut WgpuBuf,
        c: &mut WgpuBuf,
        h: &mut WgpuBuf,
        tanh_c: &mut WgpuBuf,
        mask: &WgpuBuf,
    ) -> Result<(), NumError> {
        let bh = s.batch * s.hidden;
        need("lstm_cell_fwd", gates, (s.t + 1) * 4 * bh)?;
        need("lstm_cell_fwd", c, (s.t + 2) * bh)?;
        need("lstm_cell_fwd", h, (s.t + 2) * bh)?;
        need("lstm_cell_fwd", tanh_c, (s.t + 1) * bh)?;
        need("lstm_cell_fwd", mask, (s.t + 1) * s.batch)?;
        if bh == 0 {
            return Ok(());
        }
        let groups = self.pointwise_groups("lstm_cell_fwd", bh)?;
        self.dispatch(
            Shader::LstmCell,
            "lstm_cell_fwd",
            bytemuck::bytes_of(&Self::cell_dims(&s)?),
            &[
                &gates.buffer,
                &c.buffer,
                &h.buffer,
                &tanh_c.buffer,
                &mask.buffer,
            ],
            groups,
        )?;
        Ok(())
    }

    fn lstm_cell_bwd(
        &self,
        s: CellStep,
        gates: &WgpuBuf,
        c: &WgpuBuf,
        tanh_c: &WgpuBuf,
        mask: &WgpuBuf,
        d_h: &WgpuBuf,
        d_c: &mut WgpuBuf,
        d_gates: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        let bh = s.batch * s.hidden;
        need("lstm_cell_bwd", gates, (s.t + 1) * 4 * bh)?;
        need("lstm_cell_bwd", c, (s.t + 1) * bh)?;
        need("lstm_cell_bwd", tanh_c, (s.t + 1) * bh)?;
        need("lstm_cell_bwd", mask, (s.t + 1) * s.batch)?;
        need("lstm_cell_bwd", d_h, (s.t + 2) * bh)?;
        need("lstm_cell_bwd", d_c, (s.t + 2) * bh)?;
        need("lstm_cell_bwd", d_gates, (s.t + 1) * 4 * bh)?;
        if bh == 0 {
            return Ok(());
        }
        let groups = self.pointwise_groups("lstm_cell_bwd", bh)?;
        self.dispatch(
            Shader::LstmCell,
            "lstm_cell_bwd",
            bytemuck::bytes_of(&Self::cell_dims(&s)?),
            &[
                &gates.buffer,
                &c.buffer,
                &tanh_c.buffer,
                &mask.buffer,
                &d_h.buffer,
                &d_c.buffer,
                &d_gates.buffer,
            ],
            groups,
        )?;
        Ok(())
    }

    fn task_gate_fwd(
        &self,
        s: CellStep,
        o_k: &mut WgpuBuf,
        q_k: &mut WgpuBuf,
        tanh_c: &WgpuBuf,
        mask: &WgpuBuf,
    ) -> Result<(), NumError> {
        let bh = s.batch * s.hidden;
        need("task_gate_fwd", o_k, (s.t + 1) * bh)?;
        need("task_gate_fwd", q_k, (s.t + 2) * bh)?;
        need("task_gate_fwd", tanh_c, (s.t + 1) * bh)?;
        need("task_gate_fwd", mask, (s.t + 1) * s.batch)?;
        if bh == 0 {
            return Ok(());
        }
        let groups = self.pointwise_groups("task_gate_fwd", bh)?;
        self.dispatch(
            Shader::TaskGate,
            "task_gate_fwd",
            bytemuck::bytes_of(&Self::cell_dims(&s)?),
            &[&o_k.buffer, &q_k.buffer, &tanh_c.buffer, &mask.buffer],
            groups,
        )?;
        Ok(())
    }

    fn task_gate_bwd(
        &self,
        s: CellStep,
        o_k: &WgpuBuf,
        tanh_c: &WgpuBuf,
        mask: &WgpuBuf,
        d_q_k: &WgpuBuf,
        d_o_k: &mut WgpuBuf,
        d_c: &mut WgpuBuf,
    ) -> Result<(), NumError> {
        let bh = s.batch * s.hidden;
        need("task_gate_bwd", o_k, (s.t + 1) * bh)?;
        need("task_gate_bwd", tanh_c, (s.t + 1) * bh)?;
        need("task_gate_bwd", mask, (s.t + 1) * s.batch)?;
        need("task_gate_bwd", d_q_k, (s.t + 2) * bh)?;
        need("task_gate_bwd", d_o_k, (s.t + 1) * bh)?;
        need("task_gate_bwd", d_c, (s.t + 2) * bh)?;
        if bh == 0 {
            return Ok(());
        }
        let groups = self.pointwise_groups("task_gate_bwd", bh)?;
        self.dispatch(
            Shader::TaskGate,
            "task_gate_bwd",
            bytemuck::bytes_of(&Self::cell_dims(&s)?),
            &[
                &o_k.buffer,
                &tanh_c.buffer,
                &mask.buffer,
                &d_q_k.buffer,
                &d_o_k.buffer,
                &d_c.buffer,
            ],
            groups,
        )?;
        Ok(())
    }

    fn sync(&self) -> Result<(), NumError> {
        self.flush()?;
        self.wait()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fold_groups;

    #[test]
    fn fold_groups_covers_every_workgroup_once() {
        assert_eq!(fold_groups(1, 65535), Some((1, 1)));
        assert_eq!(fold_groups(65535, 65535), Some((65535, 1)));
        assert_eq!(fold_groups(65536, 65535), Some((65535, 2)));
        // With a small limit: 10 groups in rows of 4 -> 3 rows; the shader's bound check
        // drops the 2 surplus workgroups of the last row.
        assert_eq!(fold_groups(10, 4), Some((4, 3)));
        assert_eq!(fold_groups(16, 4), Some((4, 4)));
        assert_eq!(fold_groups(17, 4), None);
    }
}
