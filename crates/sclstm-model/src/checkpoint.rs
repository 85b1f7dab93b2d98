//! Checkpoints: every parameter as a safetensors tensor under its store name, in the
//! model's element type (F32, or F64 for an f64 model), plus optional extra tensors
//! (`extra.<name>`, e.g. optimizer moments) and string metadata. Either precision loads
//! into a model of either precision (f32 → f64 is exact; f64 → f32 rounds).
//! The model configuration is stored as JSON in the metadata key [`CONFIG_KEY`].
//! Writes are atomic: a temporary file in the same folder, synced, then renamed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sclstm_autodiff::optim::AdamParamState;
use sclstm_core::{Backend, Matrix, Real};

use crate::{ModelConfig, ModelError, Tagger};

/// Metadata key holding the model configuration as JSON.
pub const CONFIG_KEY: &str = "sclstm.model_config";

/// Prefix of extra (non-parameter) tensors inside a checkpoint file.
pub const EXTRA_PREFIX: &str = "extra.";

/// Named matrices as read from safetensors files, widened to f64 (exact for F32 tensors).
pub type NamedTensors = Vec<(String, Matrix<f64>)>;

/// String metadata of a safetensors file.
pub type Metadata = BTreeMap<String, String>;

/// What a checkpoint holds besides the parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointExtras {
    /// Extra tensors, names without the `extra.` prefix, sorted by name.
    pub tensors: NamedTensors,
    /// String metadata (includes [`CONFIG_KEY`]).
    pub metadata: BTreeMap<String, String>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, message: impl ToString) -> ModelError {
    ModelError::CheckpointFormat {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder + rename).
///
/// # Errors
/// [`ModelError::Io`] naming the file that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| format_err(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        // The rename is durable only once the directory entry is on disk too.
        sync_dir(&dir).map_err(io_err(&dir))
    })();
    if result.is_err() {
        // Best effort: never leave a half-written temporary behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes a directory's entries to disk (a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        std::fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

/// Writes named 2-D tensors (F32 or F64, as `R`) and string metadata as one safetensors
/// file, atomically.
///
/// # Errors
/// [`ModelError::CheckpointFormat`] for duplicate names, [`ModelError::NonFiniteTensor`]
/// for a tensor holding NaN or an infinity (nothing is written), [`ModelError::Io`] on
/// write failure.
pub fn write_tensors<R: Real>(
    path: &Path,
    tensors: &[(String, Matrix<R>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    for (name, m) in tensors {
        refuse_non_finite(path, name, m)?;
    }
    let mut seen = HashSet::new();
    let mut bytes = Vec::with_capacity(tensors.len());
    for (name, m) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(format_err(path, format!("tensor {name:?} given twice")));
        }
        // f32 → f64 → f32 is exact, so an f32 tensor keeps its bits.
        let data: Vec<u8> = match dtype_of::<R>() {
            Dtype::F32 => m
                .iter()
                .flat_map(|x| (Real::to_f64(*x) as f32).to_le_bytes())
                .collect(),
            _ => m
                .iter()
                .flat_map(|x| Real::to_f64(*x).to_le_bytes())
                .collect(),
        };
        bytes.push((name.as_str(), vec![m.nrows(), m.ncols()], data));
    }
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(dtype_of::<R>(), shape.clone(), data)
                .map(|v| (*name, v))
                .map_err(|e| format_err(path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let mut buf = safetensors::serialize(views, Some(meta)).map_err(|e| format_err(path, e))?;
    sort_header_metadata(&mut buf, metadata).map_err(|m| format_err(path, m))?;
    write_atomic(path, &buf)
}

/// The safetensors dtype of `R`.
fn dtype_of<R: Real>() -> Dtype {
    if R::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// [`ModelError::NonFiniteTensor`] for the first NaN or infinity of `m`.
fn refuse_non_finite<R: Real>(path: &Path, name: &str, m: &Matrix<R>) -> Result<(), ModelError> {
    match m.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(ModelError::NonFiniteTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            index,
            value: m.iter().nth(index).map_or(f64::NAN, |x| Real::to_f64(*x)),
        }),
    }
}

/// safetensors writes the metadata map in `HashMap` order, which changes from process to
/// process; rewriting it in key order (the same entries, hence the same length) gives
/// equal checkpoints equal bytes.
fn sort_header_metadata(buf: &mut [u8], metadata: &BTreeMap<String, String>) -> Result<(), String> {
    const LEAD: &[u8] = b"{\"__metadata__\":";
    let sorted = serde_json::to_vec(metadata).map_err(|e| e.to_string())?;
    let start = 8 + LEAD.len();
    let end = start + sorted.len();
    let same_entries = buf.get(8..start) == Some(LEAD)
        && buf
            .get(start..end)
            .and_then(|s| serde_json::from_slice::<BTreeMap<String, String>>(s).ok())
            .is_some_and(|m| m == *metadata);
    if !same_entries {
        return Err("unexpected safetensors header layout".to_string());
    }
    buf[start..end].copy_from_slice(&sorted);
    Ok(())
}

/// Reads every tensor of a safetensors file (F32 or F64) as a 2-D f64 matrix (1-D tensors
/// as one row, scalars as 1×1), sorted by name, with the file's metadata.
///
/// # Errors
/// [`ModelError::Io`] if unreadable, [`ModelError::CheckpointFormat`] if not safetensors,
/// [`ModelError::CheckpointShape`] for a tensor that is not F32 / F64 or has more than 2 axes,
/// [`ModelError::NonFiniteTensor`] for one holding NaN or an infinity.
pub fn read_tensors(path: &Path) -> Result<(NamedTensors, Metadata), ModelError> {
    let buf = std::fs::read(path).map_err(io_err(path))?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| format_err(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&buf).map_err(|e| format_err(path, e))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let dims = match shape.as_slice() {
            [] => Some((1, 1)),
            [n] => Some((1, *n)),
            [r, c] => Some((*r, *c)),
            _ => None,
        };
        let (Some(dims), Dtype::F32 | Dtype::F64) = (dims, view.dtype()) else {
            return Err(ModelError::CheckpointShape {
                path: path.to_path_buf(),
                name,
                expected: vec![],
                found: shape,
                dtype: format!("{:?}", view.dtype()),
            });
        };
        let values: Vec<f64> = if view.dtype() == Dtype::F32 {
            view.data()
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect()
        } else {
            view.data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("internal: 8-byte chunk")))
                .collect()
        };
        let m = Matrix::from_shape_vec(dims, values).map_err(|e| format_err(path, e))?;
        refuse_non_finite(path, &name, &m)?;
        out.push((name, m));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, metadata))
}

/// Reads only the string metadata of a safetensors file (its header), not the tensors.
///
/// # Errors
/// [`ModelError::Io`] if unreadable, [`ModelError::CheckpointFormat`] if the header is not
/// a safetensors header.
pub fn read_metadata(path: &Path) -> Result<Metadata, ModelError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io_err(path))?;
    let len = u64::from_le_bytes(len);
    let file_len = f.metadata().map_err(io_err(path))?.len();
    if len > file_len.saturating_sub(8) {
        return Err(format_err(
            path,
            format!("header of {len} bytes overruns the file"),
        ));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(io_err(path))?;
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: Option<Metadata>,
    }
    let h: Header = serde_json::from_slice(&header).map_err(|e| format_err(path, e))?;
    Ok(h.metadata.unwrap_or_default())
}

/// Named matrices of element type `R`, as written to safetensors files.
pub type NamedMatrices<R> = Vec<(String, Matrix<R>)>;

/// Adam state as checkpoint extras: tensors `adam.m.<param>` and `adam.v.<param>` (in the
/// model's precision) and metadata `adam.step.<param>` (the step count, exact as text).
pub fn adam_to_extras<R: Real>(
    state: &[(String, AdamParamState<R>)],
) -> (NamedMatrices<R>, Metadata) {
    let mut tensors = Vec::with_capacity(2 * state.len());
    let mut meta = BTreeMap::new();
    for (name, st) in state {
        tensors.push((format!("adam.m.{name}"), st.m.clone()));
        tensors.push((format!("adam.v.{name}"), st.v.clone()));
        meta.insert(format!("adam.step.{name}"), st.step.to_string());
    }
    (tensors, meta)
}

/// The inverse of [`adam_to_extras`]: Adam state from a checkpoint's extras, ready for
/// `Adam::import` (which checks names and shapes against the parameters).
///
/// # Errors
/// [`ModelError::CheckpointFormat`] when a parameter's `m`, `v` or step is missing or the
/// step is not a number.
pub fn adam_from_extras<R: Real>(
    extras: &CheckpointExtras,
) -> Result<Vec<(String, AdamParamState<R>)>, ModelError> {
    let bad = |m: String| ModelError::CheckpointFormat {
        path: PathBuf::from("<adam state>"),
        message: m,
    };
    let cast = |m: &Matrix<f64>| m.mapv(R::from_f64);
    let find = |n: &str| extras.tensors.iter().find(|(k, _)| k == n).map(|(_, m)| m);
    let mut out = Vec::new();
    for (key, m) in &extras.tensors {
        let Some(name) = key.strip_prefix("adam.m.") else {
            continue;
        };
        let v =
            find(&format!("adam.v.{name}")).ok_or_else(|| bad(format!("adam.v.{name} missing")))?;
        let step = extras
            .metadata
            .get(&format!("adam.step.{name}"))
            .ok_or_else(|| bad(format!("adam.step.{name} missing")))?
            .parse::<u64>()
            .map_err(|e| bad(format!("adam.step.{name}: {e}")))?;
        out.push((
            name.to_string(),
            AdamParamState {
                step,
                m: cast(m),
                v: cast(v),
            },
        ));
    }
    Ok(out)
}

impl<B: Backend + 'static> Tagger<B> {
    /// Saves every parameter (in the model's precision, store names) and the config to
    /// `path`, atomically.
    ///
    /// # Errors
    /// [`ModelError::Io`] on write failure.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.save_with(path, &[], &BTreeMap::new())
    }

    /// [`Tagger::save`] plus extra tensors (stored as `extra.<name>`) and metadata.
    ///
    /// # Errors
    /// [`ModelError::CheckpointFormat`] for duplicate extra names or a metadata key equal
    /// to [`CONFIG_KEY`]; [`ModelError::Io`] on write failure.
    pub fn save_with(
        &self,
        path: &Path,
        extra: &[(String, Matrix<B::Elem>)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), ModelError> {
        if metadata.contains_key(CONFIG_KEY) {
            return Err(format_err(
                path,
                format!("metadata key {CONFIG_KEY:?} is reserved"),
            ));
        }
        let mut tensors: NamedMatrices<B::Elem> = self
            .params()
            .iter()
            .map(|(_, name, v)| (name.to_string(), v.clone()))
            .collect();
        tensors.extend(
            extra
                .iter()
                .map(|(n, m)| (format!("{EXTRA_PREFIX}{n}"), m.clone())),
        );
        let mut meta = metadata.clone();
        let config = serde_json::to_string(self.config()).map_err(|e| format_err(path, e))?;
        meta.insert(CONFIG_KEY.to_string(), config);
        write_tensors(path, &tensors, &meta)
    }

    /// Loads every parameter from `path` (all or nothing) and returns the extras.
    ///
    /// # Errors
    /// [`ModelError::CheckpointMissing`] / [`ModelError::CheckpointUnexpected`] naming the
    /// parameters that differ, [`ModelError::CheckpointShape`] for a shape mismatch;
    /// read and format errors.
    pub fn load(&mut self, path: &Path) -> Result<CheckpointExtras, ModelError> {
        let (tensors, metadata) = read_tensors(path)?;
        let mut extras = Vec::new();
        let mut found = Vec::new();
        let mut unexpected = Vec::new();
        for (name, m) in tensors {
            if let Some(rest) = name.strip_prefix(EXTRA_PREFIX) {
                extras.push((rest.to_string(), m));
            } else if let Some(id) = self.params().id(&name) {
                let expected = self.params().get(id).dim();
                if expected != m.dim() {
                    return Err(ModelError::CheckpointShape {
                        path: path.to_path_buf(),
                        name,
                        expected: vec![expected.0, expected.1],
                        found: vec![m.nrows(), m.ncols()],
                        dtype: B::Elem::NAME.to_uppercase(),
                    });
                }
                found.push((id, m));
            } else {
                unexpected.push(name);
            }
        }
        if !unexpected.is_empty() {
            return Err(ModelError::CheckpointUnexpected {
                path: path.to_path_buf(),
                names: unexpected,
            });
        }
        let present: HashSet<_> = found.iter().map(|(id, _)| *id).collect();
        let missing: Vec<String> = self
            .params()
            .iter()
            .filter(|(id, _, _)| !present.contains(id))
            .map(|(_, n, _)| n.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ModelError::CheckpointMissing {
                path: path.to_path_buf(),
                names: missing,
            });
        }
        for (id, m) in found {
            *self.params_mut().get_mut(id) = m.mapv(B::Elem::from_f64);
        }
        Ok(CheckpointExtras {
            tensors: extras,
            metadata,
        })
    }

    /// Builds a tagger from the config stored in a checkpoint and loads its parameters.
    ///
    /// # Errors
    /// [`ModelError::CheckpointFormat`] if the file has no (valid) config; as
    /// [`Tagger::new`] and [`Tagger::load`].
    pub fn from_checkpoint(
        path: &Path,
        backend: Arc<B>,
    ) -> Result<(Self, CheckpointExtras), ModelError> {
        let (_, metadata) = read_tensors(path)?;
        let json = metadata
            .get(CONFIG_KEY)
            .ok_or_else(|| format_err(path, format!("no {CONFIG_KEY:?} metadata")))?;
        let config: ModelConfig = serde_json::from_str(json).map_err(|e| format_err(path, e))?;
        let mut tagger = Tagger::new(config, backend, 0, None)?;
        let extras = tagger.load(path)?;
        Ok((tagger, extras))
    }
}
