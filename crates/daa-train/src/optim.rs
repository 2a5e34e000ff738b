use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

use crate::OptimConfig;

/// Adam (Kingma & Ba) with the state owned here, so a checkpoint can hold it and resume is
/// exact. Matches `torch.optim.Adam`: `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`,
/// with L2 weight decay added to the gradient when `weight_decay > 0` (the paper: 0).
#[derive(Debug)]
pub struct Adam {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    cfg: OptimConfig,
}

impl Adam {
    /// An optimizer over named variables (names are used to save and load the state).
    pub fn new(mut vars: Vec<(String, Var)>, cfg: OptimConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            cfg,
        })
    }

    /// Number of steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// True when every gradient of this optimizer's variables is finite (one device sync).
    pub fn gradients_finite(&self, grads: &GradStore) -> Result<bool> {
        let mut sums = Vec::with_capacity(self.vars.len());
        for (_, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                // Sum of |g|: NaN and Inf propagate, and finite values overflow only past 3e38.
                sums.push(g.abs()?.sum_all()?.to_dtype(candle_core::DType::F32)?);
            }
        }
        if sums.is_empty() {
            return Ok(true);
        }
        let total = Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f32>()?;
        Ok(total.is_finite())
    }

    /// One update from `grads`; variables without a gradient are left as they are. Parameters
    /// and moments are updated in place (`daa_kernels::adam_update`: three fused passes per
    /// parameter on the CPU, the same bits as the candle-op definition).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let OptimConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let h = daa_kernels::AdamStep {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            step: self.step,
        };
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            daa_kernels::adam_update(var, g, &mut self.m[i], &mut self.v[i], h)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`adam.m.NAME`, `adam.v.NAME`) for a checkpoint: copies,
    /// since the optimizer updates its own in place.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("adam.m.{name}"), self.m[i].copy()?);
            out.insert(format!("adam.v.{name}"), self.v[i].copy()?);
        }
        Ok(out)
    }

    /// Restores moments and step count saved by [`Self::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (which, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("adam.{which}.{name}");
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state lacks {key}"))
                })?;
                if t.shape() != var.shape() {
                    candle_core::bail!(
                        "optimizer state {key} has shape {:?}, want {:?}",
                        t.shape(),
                        var.shape()
                    );
                }
                // A copy of its own: the moments are updated in place.
                *slot = t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_torch_adam_on_a_quadratic() -> Result<()> {
        // torch: p = torch.tensor([1.0, -2.0], requires_grad=True)
        // opt = torch.optim.Adam([p], lr=0.1)
        // for _ in range(3): opt.zero_grad(); (p ** 2).sum().backward(); opt.step()
        // p -> tensor([ 0.7016, -1.7006])  (0.70158627, -1.70062339 in f64)
        let p = Var::new(&[1f32, -2.0], &Device::Cpu)?;
        let cfg = OptimConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = Adam::new(vec![("p".into(), p.clone())], cfg)?;
        for _ in 0..3 {
            let grads = p.as_tensor().sqr()?.sum_all()?.backward()?;
            opt.step(&grads)?;
        }
        let got = p.as_tensor().to_vec1::<f32>()?;
        assert!(
            (got[0] - 0.701_586_3).abs() < 1e-5 && (got[1] + 1.700_623_4).abs() < 1e-5,
            "{got:?}"
        );
        assert_eq!(opt.step_count(), 3);
        Ok(())
    }
}
