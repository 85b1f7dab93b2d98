//! The int8 products against an outside computation of the documented scheme
//! (`benches/reference/oracle_int8.py`, torch float32 and int64): the reference product
//! and each fast kernel the CPU runs give the fixture's results bit for bit,
//! with `B` plain and in strips.

use sclstm_core::{Gemm, Packed};
use sclstm_cpu::packed;
use serde_json::Value;

/// The f32 values of a fixture array of bit patterns.
fn floats(c: &Value, name: &str) -> Vec<f32> {
    c[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} is an array"))
        .iter()
        .map(|v| f32::from_bits(v.as_i64().expect("an i32 bit pattern") as i32 as u32))
        .collect()
}

#[test]
fn int8_products_match_an_outside_computation_bit_for_bit() {
    let fx: Value = serde_json::from_str(include_str!("fixtures/int8_torch.json"))
        .expect("fixture is valid JSON");
    let cases = fx["cases"].as_object().expect("cases");
    assert_eq!(cases.len(), 3, "recurrent, tall, ties");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    for (name, c) in cases {
        let size = |k: &str| c[k].as_u64().expect("a size") as usize;
        let (m, n, k) = (size("m"), size("n"), size("k"));
        let (a, w, bias, want) = (
            floats(c, "a_bits"),
            floats(c, "w_bits"),
            floats(c, "bias_bits"),
            floats(c, "c_bits"),
        );
        for strips in [false, true] {
            let mut b = vec![0u32; Packed::Int8.elems(k, n, strips)];
            packed::pack(Packed::Int8, k, n, strips, &w, &mut b).expect("pack");
            let g = Gemm {
                b_strips: strips,
                ..Gemm::new(m, n, k)
            };
            let mut got = vec![f32::NAN; m * n];
            packed::gemm_naive(Packed::Int8, &g, &a, &b, Some(&bias), &mut got).expect("naive");
            let mut runs = vec![("reference", got)];
            for kernel in packed::kernels_here(Packed::Int8) {
                for threads in [None, Some(&pool)] {
                    let mut fast = vec![f32::NAN; m * n];
                    let bias = Some(&bias[..]);
                    packed::gemm_with(kernel, Packed::Int8, &g, &a, &b, bias, &mut fast, threads)
                        .expect("fast");
                    runs.push((kernel.describe(), fast));
                }
            }
            for (which, got) in runs {
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{name}, strips {strips}, {which} product at {i}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
