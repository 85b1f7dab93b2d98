//! Which instruction set the hand-written kernels (the register-tile gemm of `small_m`
//! and the fused cell kernels of [`crate::cell`]) run with: the best this CPU has, or
//! the one the environment variable [`KERNELS_ENV`] forces, so that a slower path (the
//! AVX2 fallback, or matrixmultiply alone) can be measured on a machine that has a
//! faster one. Resolved once per process.

use std::sync::OnceLock;

/// Environment variable forcing the kernel set: `avx512`, `avxvnni`, `avx2`, `portable`,
/// or `auto` (the default: the best this CPU runs).
pub const KERNELS_ENV: &str = "SCLSTM_KERNELS";

/// A set of hand-written kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// AVX-512F: 12-row register tiles for small-`m` and tall products, dot-product
    /// kernels for transposed `B`, 16-lane cell kernels.
    Avx512,
    /// The AVX2 set with AVX-VNNI (the 256-bit `vpdpbusd` of Intel cores without AVX-512,
    /// from the 12th generation): the int8 products sum byte quads as AVX512_VNNI does,
    /// every other kernel is the AVX2 one.
    AvxVnni,
    /// AVX2 + FMA: 6-row register tiles for small-`m` products and for tall products
    /// with `B` in strips (matrixmultiply for the rest), 8-lane cell kernels.
    Avx2,
    /// No hand-written SIMD: matrixmultiply for every product, scalar cell kernels.
    Portable,
}

impl Kernels {
    /// The name [`KERNELS_ENV`] takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Avx512 => "avx512",
            Kernels::AvxVnni => "avxvnni",
            Kernels::Avx2 => "avx2",
            Kernels::Portable => "portable",
        }
    }

    /// Every set, best first.
    pub const ALL: [Kernels; 4] = [
        Kernels::Avx512,
        Kernels::AvxVnni,
        Kernels::Avx2,
        Kernels::Portable,
    ];

    /// Every set this CPU runs, best first (`Portable` always, last).
    pub fn available() -> Vec<Kernels> {
        Kernels::ALL.into_iter().filter(|k| k.runs_here()).collect()
    }

    /// Whether this CPU has the set's instructions (the detection is cached by `std`:
    /// cheap enough for a check before every call of a wide kernel).
    pub fn runs_here(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Kernels::AvxVnni => {
                Kernels::Avx2.runs_here() && std::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            Kernels::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The set in use: [`KERNELS_ENV`]'s choice when it names one this CPU runs, else the
    /// best available ([`Kernels::selected`] reports a bad choice as an error).
    pub fn active() -> Kernels {
        Kernels::selected().unwrap_or_else(|_| Kernels::available()[0])
    }

    /// The set [`KERNELS_ENV`] asks for (the best available when unset or `auto`).
    ///
    /// # Errors
    /// A message naming the variable when its value is unknown or names a set this CPU
    /// lacks.
    pub fn selected() -> Result<Kernels, String> {
        static SELECTED: OnceLock<Result<Kernels, String>> = OnceLock::new();
        SELECTED
            .get_or_init(|| Kernels::resolve(std::env::var(KERNELS_ENV).ok().as_deref()))
            .clone()
    }

    /// [`Kernels::selected`] for a given value of the variable.
    fn resolve(value: Option<&str>) -> Result<Kernels, String> {
        let available = Kernels::available();
        let wanted = match value.map(str::trim) {
            None | Some("" | "auto") => return Ok(available[0]),
            Some(name) => match Kernels::ALL.into_iter().find(|k| k.name() == name) {
                Some(k) => k,
                None => {
                    return Err(format!(
                        "{KERNELS_ENV}={name:?} is not a kernel set: use avx512, avxvnni, \
                         avx2, portable or auto"
                    ));
                }
            },
        };
        if available.contains(&wanted) {
            Ok(wanted)
        } else {
            Err(format!(
                "{KERNELS_ENV}={}: this CPU does not run it (it runs {})",
                wanted.name(),
                available
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Which kernel computes each kind of product an LSTM layer's training step runs
    /// with this set, one line per kind (the recurrent backward reads the weights as
    /// stored, so every per-step product has a row-major `B`; with AVX-512 and AVX2
    /// the layers write every weight in 32-column strips).
    pub fn products(self) -> [(&'static str, &'static str); 4] {
        let kinds = [
            "per-step forward h·W (m = batch ≤ 12)",
            "per-step backward dG·W (m = batch ≤ 12)",
            "input projection over all steps",
            "weight gradient dGᵀ·X over all steps",
        ];
        let kernels = match self {
            Kernels::Avx512 => [
                "AVX-512 register tile, B in strips",
                "AVX-512 register tile, B in strips",
                "AVX-512 register tile over row chunks, B in strips",
                "matrixmultiply",
            ],
            Kernels::AvxVnni | Kernels::Avx2 => [
                "AVX2 register tile (6 rows; 32 columns for 1–2 rows), B in strips",
                "AVX2 register tile (6 rows; 32 columns for 1–2 rows), B in strips",
                "AVX2 register tile over row chunks, B in strips",
                "matrixmultiply",
            ],
            Kernels::Portable => [
                "matrixmultiply",
                "matrixmultiply",
                "matrixmultiply",
                "matrixmultiply",
            ],
        };
        std::array::from_fn(|i| (kinds[i], kernels[i]))
    }
}

/// Defines `fn NAME[<R: BOUND>](kernels: Kernels, args…) [-> RET]` running the given body
/// compiled for the vector unit of `kernels` (a set this CPU runs, asserted): with AVX-512F
/// enabled (16 f32 lanes), with AVX2 (8), or as the baseline build (4). For element loops
/// (the cell kernels, the Adam update, dropout masks): the compiler keeps the IEEE
/// operations and their order on every copy (it never contracts `a·b + c` into an FMA on
/// its own), so all copies give bit-identical results and runs stay deterministic whatever
/// the machine picks.
///
/// ```
/// sclstm_cpu::on_vector_unit! {
///     /// Doubles every element.
///     fn double<R: sclstm_core::Real>(xs: &mut [R]) {
///         xs.iter_mut().for_each(|x| *x = *x + *x);
///     }
/// }
/// let mut xs = [1.0f32, 2.5];
/// double(sclstm_cpu::kernels::Kernels::active(), &mut xs);
/// assert_eq!(xs, [2.0, 5.0]);
/// ```
#[macro_export]
macro_rules! on_vector_unit {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(<$r:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?)
            $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        $vis fn $name $(<$r: $bound>)? (
            kernels: $crate::kernels::Kernels,
            $($arg: $ty),*
        ) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$r: $bound>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn avx512 $(<$r: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn avx2 $(<$r: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            assert!(
                kernels.runs_here(),
                "internal: {} kernels on a CPU without them",
                kernels.name()
            );
            match kernels {
                // SAFETY: this CPU runs the set (asserted above).
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Kernels::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above (the avxvnni set includes AVX2).
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Kernels::AvxVnni | $crate::kernels::Kernels::Avx2 => unsafe {
                    avx2($($arg),*)
                },
                _ => body($($arg),*),
            }
        }
    };
}

/// The CPU's model name with its family, model and stepping numbers (`/proc/cpuinfo`;
/// a virtual machine's name may be as bare as "Intel(R) Xeon(R) Processor", the numbers
/// then tell the microarchitecture), or `"unknown CPU"`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| describe_cpu(&s))
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// [`cpu_model`] from the text of `/proc/cpuinfo` (its first processor): `None` without
/// a model name.
fn describe_cpu(cpuinfo: &str) -> Option<String> {
    let first = cpuinfo.split("\n\n").next().unwrap_or_default();
    let field = |key: &str| {
        first.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let name = field("model name")?;
    let numbers: Vec<String> = [
        ("family", "cpu family"),
        ("model", "model"),
        ("stepping", "stepping"),
    ]
    .into_iter()
    .filter_map(|(label, key)| field(key).map(|v| format!("{label} {v}")))
    .collect();
    Some(if numbers.is_empty() {
        name
    } else {
        format!("{name} ({})", numbers.join(", "))
    })
}

/// The CPUs this process may run on and the physical cores they sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Logical CPUs in the process's affinity list.
    pub logical: usize,
    /// Distinct physical cores among them: fewer than `logical` where two of them are
    /// hyperthreads of one core, which share its multiply-add units.
    pub cores: usize,
}

/// The [`Topology`] of this process's CPUs, from `/proc/self/status` and
/// `/sys/devices/system/cpu`; `None` where they cannot be read (not Linux).
pub fn cpu_topology() -> Option<Topology> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let cpus = parse_cpu_list(list.trim())?;
    let core_of = |cpu: usize| {
        let read = |file: &str| {
            let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/{file}");
            std::fs::read_to_string(path)
                .ok()?
                .trim()
                .parse::<i64>()
                .ok()
        };
        Some((read("physical_package_id")?, read("core_id")?))
    };
    let mut cores = cpus
        .iter()
        .map(|&c| core_of(c))
        .collect::<Option<Vec<_>>>()?;
    cores.sort_unstable();
    cores.dedup();
    Some(Topology {
        logical: cpus.len(),
        cores: cores.len(),
    })
}

/// The CPUs of a kernel CPU list such as `0-3,6` (ascending ranges); `None` when it is
/// malformed or names more CPUs than any machine has.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    const MAX_CPUS: usize = 1 << 16;
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<usize>().ok()?, hi.parse::<usize>().ok()?),
            None => {
                let c = part.parse::<usize>().ok()?;
                (c, c)
            }
        };
        if lo > hi || hi >= MAX_CPUS {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_named_with_its_family_model_and_stepping() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n\
                    model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 8\n\n\
                    processor\t: 1\nmodel name\t: Other\n";
        assert_eq!(
            describe_cpu(info).as_deref(),
            Some("Intel(R) Xeon(R) Processor (family 6, model 143, stepping 8)")
        );
        // Without the numbers the name alone; without a name nothing.
        assert_eq!(
            describe_cpu("model name : Some CPU\n").as_deref(),
            Some("Some CPU")
        );
        assert_eq!(describe_cpu("cpu family : 6\n"), None);
    }

    #[test]
    fn cpu_lists_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        for bad in ["", "3-1", "a", "0-", "0,,1", "0-70000"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_topology_counts_this_processs_cpus() {
        // Linux (CI) has both files; the count must match what the process may use.
        let t = cpu_topology().expect("Linux reports the CPU list and topology");
        let usable = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(t.logical >= usable, "{t:?} vs {usable} usable");
        assert!((1..=t.logical).contains(&t.cores), "{t:?}");
    }

    #[test]
    fn the_variable_picks_any_available_set_and_names_itself_otherwise() {
        let available = Kernels::available();
        assert_eq!(available.last(), Some(&Kernels::Portable));
        assert_eq!(Kernels::resolve(None), Ok(available[0]));
        assert_eq!(Kernels::resolve(Some("auto")), Ok(available[0]));
        for k in &available {
            assert_eq!(Kernels::resolve(Some(k.name())), Ok(*k));
        }
        let err = Kernels::resolve(Some("sse9")).unwrap_err();
        assert!(err.contains(KERNELS_ENV) && err.contains("sse9"), "{err}");
        for k in Kernels::ALL {
            if !available.contains(&k) {
                let err = Kernels::resolve(Some(k.name())).unwrap_err();
                assert!(err.contains("does not run"), "{err}");
            }
        }
    }
}
