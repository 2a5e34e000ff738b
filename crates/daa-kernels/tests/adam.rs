//! The fused in-place Adam update gives the same bits as its candle-op definition.

use candle_core::{DType, Device, Result, Tensor, Var};
use daa_kernels::{adam_update, adam_update_reference, AdamStep};

fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(t.flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .into_iter()
        .map(f64::to_bits)
        .collect())
}

fn check(dtype: DType, n: usize, weight_decay: f64) -> Result<()> {
    let dev = Device::Cpu;
    let p0 = Tensor::randn(0f32, 1., n, &dev)?.to_dtype(dtype)?;
    let (mut p_ref, mut m_ref, mut v_ref) = (p0.clone(), p0.zeros_like()?, p0.zeros_like()?);
    let p = Var::from_tensor(&p0.copy()?)?;
    let (mut m, mut v) = (p0.zeros_like()?, p0.zeros_like()?);
    for step in 1..=4u64 {
        // Gradients of several magnitudes, zeros and a sign change included.
        let g = (Tensor::randn(0f32, 1., n, &dev)?.to_dtype(dtype)? * 10f64.powi(step as i32 - 3))?;
        let h = AdamStep {
            lr: 1e-3 * step as f64,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step,
        };
        (p_ref, m_ref, v_ref) = adam_update_reference(&p_ref, &g, &m_ref, &v_ref, h)?;
        adam_update(&p, &g, &mut m, &mut v, h)?;
        assert_eq!(bits(&p)?, bits(&p_ref)?, "param, {dtype:?}, step {step}");
        assert_eq!(bits(&m)?, bits(&m_ref)?, "m, {dtype:?}, step {step}");
        assert_eq!(bits(&v)?, bits(&v_ref)?, "v, {dtype:?}, step {step}");
    }
    // The update moved the parameter.
    assert_ne!(bits(&p)?, bits(&p0)?);
    Ok(())
}

#[test]
fn fused_adam_matches_the_candle_op_definition_bit_for_bit() -> Result<()> {
    // 100,003 elements: several parallel pieces and a ragged last one.
    check(DType::F32, 100_003, 0.0)?;
    check(DType::F64, 1_000, 0.0)?;
    check(DType::F32, 1_000, 1e-2)
}

#[test]
fn other_dtypes_take_the_reference_and_write_back() -> Result<()> {
    // bf16 on the CPU has no fused path: the reference's results are written in place.
    check(DType::BF16, 257, 0.0)
}

#[test]
fn mismatched_shapes_are_refused() -> Result<()> {
    let dev = Device::Cpu;
    let p = Var::zeros(4, DType::F32, &dev)?;
    let g = Tensor::zeros(5, DType::F32, &dev)?;
    let h = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let (mut m, mut v) = (g.zeros_like()?, g.zeros_like()?);
    let err = adam_update(&p, &g, &mut m, &mut v, h).expect_err("4 vs 5");
    assert!(err.to_string().contains("shapes differ"), "{err}");
    Ok(())
}
