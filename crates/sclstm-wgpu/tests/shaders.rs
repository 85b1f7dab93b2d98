//! Every `shaders/*.wgsl` parses and validates with naga and documents itself.

use std::path::PathBuf;

use std::mem::{offset_of, size_of};

use sclstm_wgpu::{CellDims, GemmDims, Kernel, MAX_STORAGE_BINDINGS, RowDims, Shader};

fn shader_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shaders")
}

fn wgsl_files() -> Vec<PathBuf> {
    let dir = shader_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("shader folder {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable shader folder entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .wgsl files in {}", dir.display());
    files
}

/// Definitions joined in front of other shaders (no entry point of its own).
const COMMON: &str = "shaders/common.wgsl";

/// The kernel files: every `.wgsl` but [`COMMON`].
fn kernel_files() -> Vec<PathBuf> {
    wgsl_files()
        .into_iter()
        .filter(|p| !p.ends_with("common.wgsl"))
        .collect()
}

#[test]
fn every_shader_parses_and_validates() {
    assert!(
        shader_dir().join("common.wgsl").is_file(),
        "{COMMON} is missing"
    );
    for shader in Shader::ALL {
        // As compiled: with common.wgsl joined in front where the shader uses it.
        let source = shader.source();
        let shown = shader.path().to_string();
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(source, &shown)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(source, &shown)));
        assert!(
            !module.entry_points.is_empty(),
            "{shown} has no entry point"
        );
    }
}

#[test]
fn validator_rejects_a_broken_shader() {
    // An undeclared identifier must be caught, so the test above can fail.
    let source = "@compute @workgroup_size(1) fn main() { let x = missing + 1.0; }";
    assert!(naga::front::wgsl::parse_str(source).is_err());
}

#[test]
fn every_shader_has_a_documenting_header() {
    for path in kernel_files() {
        let source = std::fs::read_to_string(&path).expect("readable shader");
        let header: String = source
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
            .to_lowercase();
        for word in ["bindings", "workgroup", "dispatch", "equation"] {
            assert!(
                header.contains(word),
                "{}: header comment lacks {word:?}",
                path.display()
            );
        }
    }
}

#[test]
fn shader_table_matches_the_folder() {
    let on_disk: Vec<String> = kernel_files()
        .iter()
        .map(|p| {
            format!(
                "shaders/{}",
                p.file_name().expect("file name").to_string_lossy()
            )
        })
        .collect();
    let mut in_table: Vec<String> = Shader::ALL.iter().map(|s| s.path().to_string()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
}

/// Members (name, byte offset) and size of the WGSL struct `name` in `shader`.
fn wgsl_struct(shader: Shader, name: &str) -> (Vec<(String, usize)>, usize) {
    let module = naga::front::wgsl::parse_str(shader.source()).expect("valid WGSL");
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .expect("layout of every type");
    for (handle, ty) in module.types.iter() {
        if ty.name.as_deref() == Some(name)
            && let naga::TypeInner::Struct { members, .. } = &ty.inner
        {
            let fields = members
                .iter()
                .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                .collect();
            return (fields, layouter[handle].size as usize);
        }
    }
    panic!("{} has no struct {name}", shader.path());
}

fn fields(list: &[(&str, usize)]) -> Vec<(String, usize)> {
    list.iter().map(|&(n, o)| (n.to_string(), o)).collect()
}

#[test]
fn uniform_structs_mirror_the_rust_side() {
    let gemm = fields(&[
        ("m", offset_of!(GemmDims, m)),
        ("n", offset_of!(GemmDims, n)),
        ("k", offset_of!(GemmDims, k)),
        ("a_off", offset_of!(GemmDims, a_off)),
        ("b_off", offset_of!(GemmDims, b_off)),
        ("c_off", offset_of!(GemmDims, c_off)),
        ("trans_a", offset_of!(GemmDims, trans_a)),
        ("trans_b", offset_of!(GemmDims, trans_b)),
        ("accumulate", offset_of!(GemmDims, accumulate)),
        ("has_bias", offset_of!(GemmDims, has_bias)),
        ("pad0", offset_of!(GemmDims, pad0)),
        ("pad1", offset_of!(GemmDims, pad1)),
    ]);
    assert_eq!(
        wgsl_struct(Shader::Gemm, "GemmDims"),
        (gemm, size_of::<GemmDims>())
    );
    let cell = fields(&[
        ("rows", offset_of!(CellDims, rows)),
        ("hidden", offset_of!(CellDims, hidden)),
        ("step", offset_of!(CellDims, step)),
        ("prev", offset_of!(CellDims, prev)),
        ("next", offset_of!(CellDims, next)),
        ("pad0", offset_of!(CellDims, pad0)),
        ("pad1", offset_of!(CellDims, pad1)),
        ("pad2", offset_of!(CellDims, pad2)),
    ]);
    for shader in [Shader::LstmCell, Shader::TaskGate] {
        assert_eq!(
            wgsl_struct(shader, "CellDims"),
            (cell.clone(), size_of::<CellDims>())
        );
    }
    let rows = fields(&[
        ("width", offset_of!(RowDims, width)),
        ("rows", offset_of!(RowDims, rows)),
        ("table_stride", offset_of!(RowDims, table_stride)),
        ("table_off", offset_of!(RowDims, table_off)),
        ("dense_stride", offset_of!(RowDims, dense_stride)),
        ("dense_off", offset_of!(RowDims, dense_off)),
        ("list_off", offset_of!(RowDims, list_off)),
        ("seg_off", offset_of!(RowDims, seg_off)),
    ]);
    assert_eq!(
        wgsl_struct(Shader::Rows, "RowDims"),
        (rows, size_of::<RowDims>())
    );
}

/// wgpu's default `max_compute_workgroup_storage_size`, which the backend keeps.
const WORKGROUP_STORAGE_LIMIT: u32 = 16384;

/// Each kernel's explicit bind group layout (binding 0: uniform of the right size,
/// bindings 1..: storage with the declared access) is exactly what its entry point
/// uses, and its workgroup memory fits the default limit. wgpu would reject a mismatch
/// only when the pipeline is first built on a device; this catches it without one.
#[test]
fn kernel_table_matches_the_entry_points() {
    for kernel in Kernel::ALL {
        let shader = kernel.shader();
        let what = format!("{} in {}", kernel.entry(), shader.path());
        let module = naga::front::wgsl::parse_str(shader.source()).expect("valid WGSL");
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .expect("valid module");
        let index = module
            .entry_points
            .iter()
            .position(|e| e.name == kernel.entry())
            .unwrap_or_else(|| panic!("{what}: no such entry point"));
        let uses = info.get_entry_point(index);
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layout");
        let mut storage: Vec<(u32, bool)> = Vec::new();
        let mut uniform = None;
        let mut workgroup_bytes = 0;
        for (handle, var) in module.global_variables.iter() {
            if uses[handle].is_empty() {
                continue;
            }
            match (var.space, &var.binding) {
                (naga::AddressSpace::WorkGroup, _) => workgroup_bytes += layouter[var.ty].size,
                (naga::AddressSpace::Uniform, Some(b)) => {
                    assert_eq!((b.group, b.binding), (0, 0), "{what}: uniform binding");
                    uniform = Some(layouter[var.ty].size);
                }
                (naga::AddressSpace::Storage { access }, Some(b)) => {
                    assert_eq!(b.group, 0, "{what}: storage group");
                    let read_only = !access.contains(naga::StorageAccess::STORE);
                    storage.push((b.binding, read_only));
                }
                (space, binding) => panic!("{what}: unexpected global {space:?} {binding:?}"),
            }
        }
        storage.sort();
        let declared: Vec<(u32, bool)> = kernel
            .storage()
            .iter()
            .enumerate()
            .map(|(i, &read_only)| (i as u32 + 1, read_only))
            .collect();
        assert_eq!(
            storage, declared,
            "{what}: storage bindings (binding, read-only)"
        );
        assert!(declared.len() <= MAX_STORAGE_BINDINGS, "{what}");
        assert_eq!(
            uniform.map(u64::from),
            Some(kernel.uniform_size()),
            "{what}: uniform size"
        );
        assert!(
            workgroup_bytes <= WORKGROUP_STORAGE_LIMIT,
            "{what}: {workgroup_bytes} bytes of workgroup memory"
        );
    }
}

#[test]
fn kernel_table_names_every_entry_point() {
    for shader in Shader::ALL {
        let module = naga::front::wgsl::parse_str(shader.source()).expect("valid WGSL");
        let mut in_file: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        in_file.sort();
        let mut in_table: Vec<&str> = Kernel::ALL
            .iter()
            .filter(|k| k.shader() == shader)
            .map(|k| k.entry())
            .collect();
        in_table.sort();
        assert_eq!(in_file, in_table, "{}", shader.path());
    }
}
