use candle_core::{Result, Tensor};

/// Charbonnier loss `mean(sqrt((pred - target)^2 + eps^2))`; the paper uses `eps = 1e-3`.
pub fn charbonnier(pred: &Tensor, target: &Tensor, eps: f64) -> Result<Tensor> {
    ((pred - target)?.sqr()? + eps * eps)?.sqrt()?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn charbonnier_value() -> Result<()> {
        // numpy: np.mean(np.sqrt(np.array([0.0, 0.5, -1.0])**2 + 1e-6))
        let p = Tensor::new(&[0f32, 0.5, -1.0], &Device::Cpu)?;
        let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?;
        let v = charbonnier(&p, &t, 1e-3)?.to_scalar::<f32>()?;
        assert!((v - 0.5003337).abs() < 1e-6, "{v}");
        Ok(())
    }
}
