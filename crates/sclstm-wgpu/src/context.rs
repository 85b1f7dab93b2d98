//! Device acquisition, the shader and kernel tables and the pipeline cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use crate::WgpuError;
use crate::uniforms::{CellDims, GemmDims, RowDims};
use sclstm_core::BackendErrorKind;

/// One WGSL source file of the top-level `shaders/` folder (one kernel family each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    /// `shaders/gemm.wgsl`: tiled matrix products with fused bias (any m, and small m).
    Gemm,
    /// `shaders/lstm_cell.wgsl`: LSTM cell forward/backward step.
    LstmCell,
    /// `shaders/task_gate.wgsl`: SC-LSTM task gate forward/backward step.
    TaskGate,
    /// `shaders/rows.wgsl`: row gather and scatter-add by row ids.
    Rows,
}

impl Shader {
    /// Every shader the backend uses.
    pub const ALL: [Shader; 4] = [
        Shader::Gemm,
        Shader::LstmCell,
        Shader::TaskGate,
        Shader::Rows,
    ];

    /// Path relative to the workspace root; also the shader module's label.
    pub fn path(self) -> &'static str {
        match self {
            Shader::Gemm => "shaders/gemm.wgsl",
            Shader::LstmCell => "shaders/lstm_cell.wgsl",
            Shader::TaskGate => "shaders/task_gate.wgsl",
            Shader::Rows => "shaders/rows.wgsl",
        }
    }

    /// WGSL source, embedded at compile time (cargo rebuilds when a file changes). The
    /// pointwise and row kernels start with `shaders/common.wgsl` (workgroup size, flat
    /// index, stable activations), so those are written once.
    pub fn source(self) -> &'static str {
        macro_rules! with_common {
            ($file:literal) => {
                concat!(
                    include_str!("../../../shaders/common.wgsl"),
                    "\n",
                    include_str!($file)
                )
            };
        }
        match self {
            Shader::Gemm => include_str!("../../../shaders/gemm.wgsl"),
            Shader::LstmCell => with_common!("../../../shaders/lstm_cell.wgsl"),
            Shader::TaskGate => with_common!("../../../shaders/task_gate.wgsl"),
            Shader::Rows => with_common!("../../../shaders/rows.wgsl"),
        }
    }
}

/// One compute entry point: its shader file, entry name, uniform struct and the access
/// of each storage binding.
///
/// Every kernel binds its uniform struct at binding 0 of group 0 with a *dynamic*
/// offset (one slot of the backend's uniform arena per dispatch), and its storage
/// buffers at bindings 1, 2, … in the order of [`Kernel::storage`]. The explicit layout
/// is what lets one bind group serve every dispatch on the same buffers: the offsets
/// that differ between time steps travel in the uniform, and the uniform's slot in the
/// dynamic offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `gemm` in `shaders/gemm.wgsl`: 64 × 64 tiles.
    Gemm,
    /// `gemm_small_m` in `shaders/gemm.wgsl`: 16 × 64 tiles, k split four ways.
    GemmSmallM,
    /// `lstm_cell_fwd` in `shaders/lstm_cell.wgsl`.
    LstmCellFwd,
    /// `lstm_cell_bwd` in `shaders/lstm_cell.wgsl`.
    LstmCellBwd,
    /// `task_gate_fwd` in `shaders/task_gate.wgsl`.
    TaskGateFwd,
    /// `task_gate_bwd` in `shaders/task_gate.wgsl`.
    TaskGateBwd,
    /// `gather_rows` in `shaders/rows.wgsl`.
    GatherRows,
    /// `scatter_add_rows` in `shaders/rows.wgsl`.
    ScatterAddRows,
}

/// Most storage bindings of any kernel (`lstm_cell_bwd`: 6).
pub const MAX_STORAGE_BINDINGS: usize = 6;

impl Kernel {
    /// Every kernel the backend launches.
    pub const ALL: [Kernel; 8] = [
        Kernel::Gemm,
        Kernel::GemmSmallM,
        Kernel::LstmCellFwd,
        Kernel::LstmCellBwd,
        Kernel::TaskGateFwd,
        Kernel::TaskGateBwd,
        Kernel::GatherRows,
        Kernel::ScatterAddRows,
    ];

    /// The shader file holding the entry point.
    pub fn shader(self) -> Shader {
        match self {
            Kernel::Gemm | Kernel::GemmSmallM => Shader::Gemm,
            Kernel::LstmCellFwd | Kernel::LstmCellBwd => Shader::LstmCell,
            Kernel::TaskGateFwd | Kernel::TaskGateBwd => Shader::TaskGate,
            Kernel::GatherRows | Kernel::ScatterAddRows => Shader::Rows,
        }
    }

    /// Name of the WGSL entry point.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::Gemm => "gemm",
            Kernel::GemmSmallM => "gemm_small_m",
            Kernel::LstmCellFwd => "lstm_cell_fwd",
            Kernel::LstmCellBwd => "lstm_cell_bwd",
            Kernel::TaskGateFwd => "task_gate_fwd",
            Kernel::TaskGateBwd => "task_gate_bwd",
            Kernel::GatherRows => "gather_rows",
            Kernel::ScatterAddRows => "scatter_add_rows",
        }
    }

    /// Size in bytes of the uniform struct at binding 0 ([`GemmDims`], [`CellDims`] or
    /// [`RowDims`]).
    pub fn uniform_size(self) -> u64 {
        let size = match self {
            Kernel::Gemm | Kernel::GemmSmallM => std::mem::size_of::<GemmDims>(),
            Kernel::LstmCellFwd
            | Kernel::LstmCellBwd
            | Kernel::TaskGateFwd
            | Kernel::TaskGateBwd => std::mem::size_of::<CellDims>(),
            Kernel::GatherRows | Kernel::ScatterAddRows => std::mem::size_of::<RowDims>(),
        };
        size as u64
    }

    /// Access of storage bindings 1, 2, …: `true` for `var<storage, read>`, `false`
    /// for `var<storage, read_write>` (must match the WGSL declarations exactly).
    pub fn storage(self) -> &'static [bool] {
        const R: bool = true;
        const RW: bool = false;
        match self {
            // a, b, bias, c
            Kernel::Gemm | Kernel::GemmSmallM => &[R, R, R, RW],
            // gates, c, h, tanh_c
            Kernel::LstmCellFwd => &[RW, RW, RW, RW],
            // gates, c, tanh_c, d_h, d_c, d_gates
            Kernel::LstmCellBwd => &[R, R, R, R, RW, RW],
            // o_k, q_k, tanh_c
            Kernel::TaskGateFwd => &[RW, RW, R],
            // o_k, tanh_c, d_q_k, d_o_k, d_c
            Kernel::TaskGateBwd => &[R, R, R, RW, RW],
            // index arena, table, dense
            Kernel::GatherRows => &[R, R, RW],
            // index arena, dense, table
            Kernel::ScatterAddRows => &[R, R, RW],
        }
    }

    /// The bind group layout entries of group 0 (see the type's docs).
    fn layout_entries(self) -> Vec<wgpu::BindGroupLayoutEntry> {
        let uniform = wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(self.uniform_size()),
            },
            count: None,
        };
        let storage =
            self.storage()
                .iter()
                .enumerate()
                .map(|(i, &read_only)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32 + 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
        std::iter::once(uniform).chain(storage).collect()
    }
}

/// A compiled kernel: its pipeline and the layout its bind groups are made for.
#[derive(Debug, Clone)]
pub struct CompiledKernel {
    /// The compute pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// The explicit layout of bind group 0 (see [`Kernel`]).
    pub layout: wgpu::BindGroupLayout,
}

/// What the user should see about the adapter: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. `"llvmpipe (LLVM 19.1.7, 256 bits)"` or `"NVIDIA H100"`.
    pub name: String,
    /// Discrete, integrated, virtual, CPU (software) or other.
    pub device_type: wgpu::DeviceType,
    /// Graphics API underneath (Vulkan, Metal, DX12, GL).
    pub backend: wgpu::Backend,
    /// Driver name and version, when the driver reports them.
    pub driver: String,
}

impl AdapterSummary {
    /// Summarizes wgpu's adapter description.
    pub fn from_info(info: &wgpu::AdapterInfo) -> Self {
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        AdapterSummary {
            name: info.name.clone(),
            device_type: info.device_type,
            backend: info.backend,
            driver,
        }
    }
}

impl AdapterSummary {
    /// Whether the adapter is a CPU (a software rasterizer such as lavapipe): it runs the
    /// kernels correctly but far slower than the CPU backend.
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    /// A warning for users when the adapter is a CPU device, `None` on a GPU.
    pub fn cpu_warning(&self) -> Option<String> {
        self.is_cpu().then(|| {
            format!(
                "warning: the wgpu adapter `{}` is a CPU device (software Vulkan), not a GPU: it \
                 checks correctness but runs one to two orders of magnitude slower than \
                 `--backend cpu` (lavapipe: ~15 against ~1,000 training tokens/s per core)",
                self.name
            )
        })
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, {})",
            self.name, self.device_type, self.backend
        )?;
        if !self.driver.is_empty() {
            write!(f, ", driver {}", self.driver)?;
        }
        Ok(())
    }
}

/// The wgpu backends searched for an adapter: `WGPU_BACKEND` when set (e.g. `vulkan`),
/// otherwise Vulkan, Metal and DX12.
///
/// GL is left out of the default on purpose: without a Vulkan driver wgpu would quietly
/// fall back to GL, and a missing driver should be a clear error instead.
pub fn requested_backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

/// Device, queue and compiled pipelines: created once, shared by every kernel launch.
///
/// Shader modules and compute pipelines are compiled lazily on first use and cached
/// per [`Kernel`] (shader, entry point), so a run pays only for the kernels it calls.
pub struct WgpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    cache: Mutex<Cache>,
}

/// Compiled shader modules (one per file) and pipelines (one per entry point).
#[derive(Default)]
struct Cache {
    modules: HashMap<Shader, wgpu::ShaderModule>,
    pipelines: HashMap<Kernel, CompiledKernel>,
}

impl fmt::Debug for WgpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgpuContext")
            .field("adapter", &self.summary())
            .finish_non_exhaustive()
    }
}

impl WgpuContext {
    /// Acquires an adapter on [`requested_backends`] (preferring a discrete GPU, or
    /// `WGPU_POWER_PREF`) and opens a device with wgpu's default (portable) limits.
    ///
    /// Returns [`WgpuError::NoAdapter`] when no adapter exists, never panics.
    pub fn new() -> Result<Self, WgpuError> {
        pollster::block_on(Self::new_async())
    }

    async fn new_async() -> Result<Self, WgpuError> {
        let backends = requested_backends();
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::from_env()
                    .unwrap_or(wgpu::PowerPreference::HighPerformance),
                ..Default::default()
            })
            .await
            .map_err(|e| WgpuError::NoAdapter {
                backends: format!("{backends:?}"),
                reason: e.to_string(),
            })?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("sclstm"),
                required_features: wgpu::Features::empty(),
                required_limits: wgpu::Limits::default(),
                ..Default::default()
            })
            .await
            .map_err(|e| WgpuError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Self::from_device(device, queue, info))
    }

    /// Wraps a device and queue opened elsewhere (tests, or an application sharing its device).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        WgpuContext {
            device,
            queue,
            info,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// wgpu's full description of the adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Adapter name, device type, API and driver, for printing at start-up.
    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary::from_info(&self.info)
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they
    /// catch into [`WgpuError::Device`] instead of wgpu's default panic.
    pub fn scoped<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> Result<T, WgpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        // Scopes are a stack: pop the inner one first.
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        let caught = match (validation, oom) {
            (Some(e), _) => Some((BackendErrorKind::Validation, e)),
            (None, Some(e)) => Some((BackendErrorKind::OutOfMemory, e)),
            (None, None) => None,
        };
        match caught {
            Some((kind, e)) => Err(WgpuError::Device {
                what,
                kind,
                message: e.to_string(),
            }),
            None => Ok(out),
        }
    }

    /// The pipeline and bind group layout of `kernel`, compiled on first use.
    pub fn pipeline(&self, kernel: Kernel) -> Result<CompiledKernel, WgpuError> {
        let mut cache = self
            .cache
            .lock()
            .expect("internal: pipeline cache lock poisoned");
        if let Some(p) = cache.pipelines.get(&kernel) {
            return Ok(p.clone());
        }
        let shader = kernel.shader();
        let module = match cache.modules.get(&shader) {
            Some(m) => m.clone(),
            None => {
                let m = self.scoped("compiling a shader module", || {
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(shader.path()),
                            source: wgpu::ShaderSource::Wgsl(shader.source().into()),
                        })
                })?;
                cache.modules.insert(shader, m.clone());
                m
            }
        };
        let compiled = self.scoped("compiling a compute pipeline", || {
            let layout = self
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(kernel.entry()),
                    entries: &kernel.layout_entries(),
                });
            let pipeline_layout =
                self.device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(kernel.entry()),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
            let pipeline = self
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.entry()),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(kernel.entry()),
                    compilation_options: Default::default(),
                    cache: None,
                });
            CompiledKernel { pipeline, layout }
        })?;
        cache.pipelines.insert(kernel, compiled.clone());
        Ok(compiled)
    }
}
