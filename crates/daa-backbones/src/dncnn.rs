//! DnCNN (Zhang et al., "Beyond a Gaussian Denoiser", TIP 2017, arXiv:1608.03981).
//!
//! conv3x3+ReLU, then `depth - 2` x (conv3x3 [+ BatchNorm] + ReLU), then conv3x3; the output is
//! the residual (DnCNN's noise estimate with the sign that `x + R(x)` restores). Differences
//! from the original: BatchNorm is optional (`batch_norm`), biases are kept on every conv
//! when it is off. Tensor names: `head`, `body.{i}.conv`, `body.{i}.bn`, `tail`.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{batch_norm, BatchNorm, BatchNormConfig, VarBuilder};
use daa_kernels::Conv2d;

use crate::common::conv2d;

/// DnCNN configuration. Input/output `(B, 3, H, W)`, any size.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnCnnConfig {
    /// Total number of conv layers (the paper: 17).
    pub depth: usize,
    /// Channels of the hidden layers (the paper: 64).
    pub width: usize,
    /// BatchNorm after the middle convs (the paper: yes).
    pub batch_norm: bool,
}

impl DnCnnConfig {
    /// The original DnCNN-S: 17 layers of 64 channels with BatchNorm.
    pub fn paper() -> Self {
        Self {
            depth: 17,
            width: 64,
            batch_norm: true,
        }
    }
    /// CPU-sized: 10 layers of 32 channels.
    pub fn cpu() -> Self {
        Self {
            depth: 10,
            width: 32,
            batch_norm: true,
        }
    }
    /// For tests.
    pub fn tiny() -> Self {
        Self {
            depth: 4,
            width: 8,
            batch_norm: true,
        }
    }
    fn validate(&self) -> Result<()> {
        if self.depth < 2 || self.width == 0 {
            candle_core::bail!("dncnn: need depth >= 2 and width > 0, got {self:?}");
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Layer {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

/// DnCNN (see the module docs).
#[derive(Debug, Clone)]
pub struct DnCnn {
    head: Conv2d,
    body: Vec<Layer>,
    tail: Conv2d,
    width: usize,
    span: tracing::Span,
}

impl DnCnn {
    /// Channels of the hidden layers.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Creates or loads the network from `vb`.
    pub fn new(vb: VarBuilder, cfg: &DnCnnConfig) -> Result<Self> {
        cfg.validate()?;
        let head = conv2d(vb.pp("head"), 3, cfg.width, 3, 1, 1, true)?;
        let mut body = Vec::new();
        for i in 0..cfg.depth - 2 {
            let vb = vb.pp("body").pp(i);
            let layer = if cfg.batch_norm {
                let bn_cfg = BatchNormConfig {
                    eps: 1e-4,
                    ..Default::default()
                };
                Layer {
                    conv: conv2d(vb.pp("conv"), cfg.width, cfg.width, 3, 1, 1, false)?,
                    bn: Some(batch_norm(cfg.width, bn_cfg, vb.pp("bn"))?),
                }
            } else {
                Layer {
                    conv: conv2d(vb.pp("conv"), cfg.width, cfg.width, 3, 1, 1, true)?,
                    bn: None,
                }
            };
            body.push(layer);
        }
        let tail = conv2d(vb.pp("tail"), cfg.width, 3, 3, 1, 1, true)?;
        Ok(Self {
            head,
            body,
            tail,
            width: cfg.width,
            span: tracing::span!(tracing::Level::TRACE, "dncnn"),
        })
    }
}

impl DnCnn {
    /// `(B, 3, H, W)` -> (residual `(B, 3, H, W)`, features). DnCNN has no encoder and no
    /// bottleneck; its "bottleneck" here is the input of the last conv (`tail`), i.e. the
    /// deepest hidden features, at full resolution: `(B, width, H, W)`. `train` selects
    /// BatchNorm's batch statistics.
    pub fn forward_with_features(&self, xs: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let _e = self.span.enter();
        let mut xs = xs.apply(&self.head)?.relu()?;
        for layer in &self.body {
            xs = xs.apply(&layer.conv)?;
            if let Some(bn) = &layer.bn {
                xs = xs.apply_t(bn, train)?;
            }
            xs = xs.relu()?;
        }
        Ok((self.tail.forward(&xs)?, xs))
    }
}

impl ModuleT for DnCnn {
    /// `(B, 3, H, W) -> (B, 3, H, W)`: the residual. `train` selects batch statistics.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_with_features(xs, train)?.0)
    }
}
