//! The element type trait.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point element type: `f32` (training, wgpu) or `f64` (gradient checks).
pub trait Real:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// Name of the type as printed in reports (`"f32"` or `"f64"`).
    const NAME: &'static str;

    /// Converts from `f64` (rounding for `f32`).
    fn from_f64(x: f64) -> Self;

    /// Widens to `f64`.
    fn to_f64(self) -> f64;

    /// The slice as `f32`s when `Self` is `f32`, else `None`. Kernels written for one
    /// precision dispatch on these views (no type ids, no casts in the kernels' crates).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;

    /// Mutable version of [`Real::as_f32`].
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;

    /// The pointer as `*const f32` when `Self` is `f32`, else `None`.
    fn f32_ptr(p: *const Self) -> Option<*const f32>;

    /// The pointer as `*mut f32` when `Self` is `f32`, else `None`.
    fn f32_ptr_mut(p: *mut Self) -> Option<*mut f32>;

    /// The pointer as `*const f64` when `Self` is `f64`, else `None`.
    fn f64_ptr(p: *const Self) -> Option<*const f64>;

    /// The pointer as `*mut f64` when `Self` is `f64`, else `None`.
    fn f64_ptr_mut(p: *mut Self) -> Option<*mut f64>;

    /// Logistic sigmoid `1 / (1 + e^-x)`, computed without overflow for large |x|.
    fn sigmoid(self) -> Self {
        if self >= Self::zero() {
            Self::one() / (Self::one() + (-self).exp())
        } else {
            let e = self.exp();
            e / (Self::one() + e)
        }
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
    fn f32_ptr(p: *const Self) -> Option<*const f32> {
        Some(p)
    }
    fn f32_ptr_mut(p: *mut Self) -> Option<*mut f32> {
        Some(p)
    }
    fn f64_ptr(_: *const Self) -> Option<*const f64> {
        None
    }
    fn f64_ptr_mut(_: *mut Self) -> Option<*mut f64> {
        None
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn f32_ptr(_: *const Self) -> Option<*const f32> {
        None
    }
    fn f32_ptr_mut(_: *mut Self) -> Option<*mut f32> {
        None
    }
    fn f64_ptr(p: *const Self) -> Option<*const f64> {
        Some(p)
    }
    fn f64_ptr_mut(p: *mut Self) -> Option<*mut f64> {
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::Real;

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        for &x in &[-800.0f64, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0] {
            let s = x.sigmoid();
            assert!(s.is_finite());
            assert!((s + (-x).sigmoid() - 1.0).abs() < 1e-15, "x={x}");
        }
        assert_eq!(0.0f32.sigmoid(), 0.5);
    }
}
