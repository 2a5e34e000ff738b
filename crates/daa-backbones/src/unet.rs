//! The paper's U-Net restorer.
//!
//! Paper: Liao et al., "Denoising as Adaptation", ICLR 2025, arXiv:2406.18516; the restorer of
//! its denoising/deraining/deblurring experiments (github.com/KangLiao929/Noise-DA). Written
//! from the description in docs/method.md section 4, not from the reference code. Tensor names are
//! the official ones (`down_path.{i}.block.{0,2}`, `up_path.{i}.conv_up`,
//! `up_path.{i}.conv_block.block.{0,2}`, `last`). Differences: none known in the forward pass;
//! the bilinear upsampling is computed as two matrix products so it has a backward in candle.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use daa_kernels::Conv2d;

use crate::common::{avg_pool2, conv2d, upsample_bilinear2x_align_corners};

/// U-Net configuration. Input/output: `(B, in_channels, H, W)`, H and W multiples of
/// `2^(depth-1)`; the output is the residual.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Input channels (3 for RGB).
    pub in_channels: usize,
    /// Output channels (3 for RGB).
    pub out_channels: usize,
    /// Width of the first level; level `i` has `width * 2^i` channels.
    pub width: usize,
    /// Number of levels (the paper: 4).
    pub depth: usize,
    /// Negative slope of the LeakyReLU (the paper: 0.2).
    pub slope: f64,
}

impl UNetConfig {
    /// The paper's restorer: widths 64/128/256/512, 8,559,171 parameters.
    pub fn paper() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            width: 64,
            depth: 4,
            slope: 0.2,
        }
    }
    /// A CPU-sized restorer: widths 16/32/64/128, 536,211 parameters.
    pub fn cpu() -> Self {
        Self {
            width: 16,
            ..Self::paper()
        }
    }
    /// For tests: widths 8/16/32.
    pub fn tiny() -> Self {
        Self {
            width: 8,
            depth: 3,
            ..Self::paper()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.depth == 0 || self.width == 0 || self.in_channels == 0 || self.out_channels == 0 {
            candle_core::bail!("unet: depth, width and channels must be positive, got {self:?}");
        }
        if !(0.0..1.0).contains(&self.slope) {
            candle_core::bail!("unet: slope must be in [0, 1), got {}", self.slope);
        }
        Ok(())
    }

    /// Input sides must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << (self.depth - 1)
    }
}

fn conv3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    conv2d(vb, cin, cout, 3, 1, 1, true)
}

/// conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU (`block.0`, `block.2`).
#[derive(Debug, Clone)]
struct ConvBlock {
    conv0: Conv2d,
    conv2: Conv2d,
    slope: f64,
}

impl ConvBlock {
    fn new(vb: VarBuilder, cin: usize, cout: usize, slope: f64) -> Result<Self> {
        let vb = vb.pp("block");
        Ok(Self {
            conv0: conv3(vb.pp("0"), cin, cout)?,
            conv2: conv3(vb.pp("2"), cout, cout)?,
            slope,
        })
    }
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Each conv + LeakyReLU is one op on the CPU (the same values as the two).
        let xs = self.conv0.forward_leaky_relu(xs, self.slope)?;
        self.conv2.forward_leaky_relu(&xs, self.slope)
    }
}

#[derive(Debug, Clone)]
struct UpBlock {
    conv_up: Conv2d,
    conv_block: ConvBlock,
}

/// The U-Net restorer of the paper (see the module docs).
#[derive(Debug, Clone)]
pub struct UNet {
    down_path: Vec<ConvBlock>,
    up_path: Vec<UpBlock>,
    last: Conv2d,
    cfg: UNetConfig,
    span: tracing::Span,
}

impl UNet {
    /// Creates or loads the network from `vb` (paths = official tensor names).
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        cfg.validate()?;
        let mut down_path = Vec::with_capacity(cfg.depth);
        let mut prev = cfg.in_channels;
        for i in 0..cfg.depth {
            let ch = cfg.width << i;
            down_path.push(ConvBlock::new(
                vb.pp("down_path").pp(i),
                prev,
                ch,
                cfg.slope,
            )?);
            prev = ch;
        }
        let mut up_path = Vec::with_capacity(cfg.depth - 1);
        for (up_idx, level) in (0..cfg.depth - 1).rev().enumerate() {
            let ch = cfg.width << level;
            let vb_up = vb.pp("up_path").pp(up_idx);
            up_path.push(UpBlock {
                conv_up: conv3(vb_up.pp("conv_up"), prev, ch)?,
                conv_block: ConvBlock::new(vb_up.pp("conv_block"), 2 * ch, ch, cfg.slope)?,
            });
            prev = ch;
        }
        let last = conv3(vb.pp("last"), prev, cfg.out_channels)?;
        let span = tracing::span!(tracing::Level::TRACE, "unet");
        Ok(Self {
            down_path,
            up_path,
            last,
            cfg: cfg.clone(),
            span,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }
}

impl UNet {
    /// `(B, C_in, H, W)`, sides multiples of [`UNetConfig::size_multiple`] -> (residual
    /// `(B, C_out, H, W)`, bottleneck features). The bottleneck is the output of the deepest
    /// `down_path` block: `(B, width * 2^(depth-1), H / 2^(depth-1), W / 2^(depth-1))`.
    pub fn forward_with_features(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let _e = self.span.enter();
        let m = self.cfg.size_multiple();
        let (_, _, h, w) = xs.dims4()?;
        if h % m != 0 || w % m != 0 {
            candle_core::bail!(
                "unet: input sides must be multiples of {m}, got {h}x{w} (use restore())"
            );
        }
        let mut skips = Vec::with_capacity(self.down_path.len());
        let mut xs = xs.clone();
        for (i, block) in self.down_path.iter().enumerate() {
            xs = block.forward(&xs)?;
            if i + 1 < self.down_path.len() {
                skips.push(xs.clone());
                xs = avg_pool2(&xs)?;
            }
        }
        let bottleneck = xs.clone();
        for up in &self.up_path {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("unet: skip underflow".into()))?;
            // (B, C, H, W) -> (B, C/2, 2H, 2W), then concat [up, skip] on channels.
            let up_xs = upsample_bilinear2x_align_corners(&xs)?.apply(&up.conv_up)?;
            xs = up.conv_block.forward(&Tensor::cat(&[&up_xs, &skip], 1)?)?;
        }
        Ok((xs.apply(&self.last)?, bottleneck))
    }
}

impl Module for UNet {
    /// `(B, C_in, H, W) -> (B, C_out, H, W)`: the residual.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_features(xs)?.0)
    }
}
