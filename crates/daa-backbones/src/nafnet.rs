//! NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022, arXiv:2204.04676;
//! reference github.com/megvii-research/NAFNet).
//!
//! Written from the paper: NAFBlocks (LayerNorm2d, 1x1 conv, depthwise 3x3, SimpleGate,
//! simplified channel attention, 1x1 conv, learned `beta`; then a gated FFN with `gamma`),
//! 2x2 stride-2 convs down, 1x1 conv + PixelShuffle up, additive skips. Tensor names follow the
//! reference (`intro`, `encoders.{i}.{j}.conv1`, `downs.{i}`, `middle_blks.{j}`, `ups.{i}.0`,
//! `decoders.{i}.{j}`, `ending`). Differences: the output is the residual (the reference adds
//! the input inside the network; here `restore()` does), dropout is not implemented (the
//! reference's default is 0), and the depthwise conv is computed as nine shifted products.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use daa_kernels::Conv2d;

use crate::common::{conv2d, depthwise_conv3x3, global_avg_pool, layer_norm_2d};

/// NAFNet configuration. Input/output `(B, 3, H, W)`, sides multiples of `2^len(enc_blocks)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NafNetConfig {
    /// Channels after the intro conv.
    pub width: usize,
    /// NAFBlocks per encoder level.
    pub enc_blocks: Vec<usize>,
    /// NAFBlocks in the middle.
    pub middle_blocks: usize,
    /// NAFBlocks per decoder level (same length as `enc_blocks`).
    pub dec_blocks: Vec<usize>,
}

impl NafNetConfig {
    /// NAFNet-GoPro-width32, the reference's deblurring model.
    pub fn deblur() -> Self {
        Self {
            width: 32,
            enc_blocks: vec![1, 1, 1, 28],
            middle_blocks: 1,
            dec_blocks: vec![1, 1, 1, 1],
        }
    }
    /// CPU-sized.
    pub fn cpu() -> Self {
        Self {
            width: 16,
            enc_blocks: vec![1, 1, 1],
            middle_blocks: 1,
            dec_blocks: vec![1, 1, 1],
        }
    }
    /// For tests.
    pub fn tiny() -> Self {
        Self {
            width: 8,
            enc_blocks: vec![1, 1],
            middle_blocks: 1,
            dec_blocks: vec![1, 1],
        }
    }
    fn validate(&self) -> Result<()> {
        if self.width == 0 || self.enc_blocks.len() != self.dec_blocks.len() {
            candle_core::bail!(
                "nafnet: width > 0 and as many decoder as encoder levels needed, got {self:?}"
            );
        }
        Ok(())
    }
    /// Input sides must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << self.enc_blocks.len()
    }
}

fn conv1x1(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    conv2d(vb, cin, cout, 1, 0, 1, true)
}

/// SimpleGate: split channels in two halves and multiply them.
fn simple_gate(xs: &Tensor) -> Result<Tensor> {
    let c = xs.dim(1)? / 2;
    xs.narrow(1, 0, c)?.mul(&xs.narrow(1, c, c)?)
}

#[derive(Debug, Clone)]
struct NafBlock {
    norm1: (Tensor, Tensor),
    norm2: (Tensor, Tensor),
    conv1: Conv2d,
    conv2_w: Tensor,
    conv2_b: Tensor,
    conv3: Conv2d,
    sca: Conv2d,
    conv4: Conv2d,
    conv5: Conv2d,
    beta: Tensor,
    gamma: Tensor,
}

impl NafBlock {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        let dw = 2 * c;
        let ones = candle_nn::Init::Const(1.0);
        let zeros = candle_nn::Init::Const(0.0);
        let norm = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                vb.pp(name).get_with_hints(c, "weight", ones)?,
                vb.pp(name).get_with_hints(c, "bias", zeros)?,
            ))
        };
        // Depthwise conv: PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 9.
        let bound = 1.0 / 3.0;
        let uni = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            norm1: norm("norm1")?,
            norm2: norm("norm2")?,
            conv1: conv1x1(vb.pp("conv1"), c, dw)?,
            conv2_w: vb
                .pp("conv2")
                .get_with_hints((dw, 1, 3, 3), "weight", uni)?,
            conv2_b: vb.pp("conv2").get_with_hints(dw, "bias", uni)?,
            conv3: conv1x1(vb.pp("conv3"), c, c)?,
            sca: conv1x1(vb.pp("sca").pp("1"), c, c)?,
            conv4: conv1x1(vb.pp("conv4"), c, 2 * c)?,
            conv5: conv1x1(vb.pp("conv5"), c, c)?,
            beta: vb.get_with_hints((1, c, 1, 1), "beta", zeros)?,
            gamma: vb.get_with_hints((1, c, 1, 1), "gamma", zeros)?,
        })
    }

    fn forward(&self, inp: &Tensor) -> Result<Tensor> {
        let xs = layer_norm_2d(inp, &self.norm1.0, &self.norm1.1, 1e-6)?;
        let xs = xs.apply(&self.conv1)?;
        let xs = simple_gate(&depthwise_conv3x3(&xs, &self.conv2_w, Some(&self.conv2_b))?)?;
        let xs = xs.broadcast_mul(&global_avg_pool(&xs)?.apply(&self.sca)?)?;
        let xs = xs.apply(&self.conv3)?;
        let ys = (inp + xs.broadcast_mul(&self.beta)?)?;
        let xs = layer_norm_2d(&ys, &self.norm2.0, &self.norm2.1, 1e-6)?;
        let xs = simple_gate(&xs.apply(&self.conv4)?)?.apply(&self.conv5)?;
        ys + xs.broadcast_mul(&self.gamma)?
    }
}

fn stage(vb: VarBuilder, c: usize, n: usize) -> Result<Vec<NafBlock>> {
    (0..n).map(|j| NafBlock::new(vb.pp(j), c)).collect()
}

fn run(blocks: &[NafBlock], xs: Tensor) -> Result<Tensor> {
    blocks.iter().try_fold(xs, |xs, b| b.forward(&xs))
}

/// NAFNet (see the module docs).
#[derive(Debug, Clone)]
pub struct NafNet {
    intro: Conv2d,
    encoders: Vec<Vec<NafBlock>>,
    downs: Vec<Conv2d>,
    middle_blks: Vec<NafBlock>,
    ups: Vec<Conv2d>,
    decoders: Vec<Vec<NafBlock>>,
    ending: Conv2d,
    multiple: usize,
    width: usize,
    span: tracing::Span,
}

impl NafNet {
    /// Creates or loads the network from `vb`.
    pub fn new(vb: VarBuilder, cfg: &NafNetConfig) -> Result<Self> {
        cfg.validate()?;
        let intro = conv2d(vb.pp("intro"), 3, cfg.width, 3, 1, 1, true)?;
        let mut c = cfg.width;
        let (mut encoders, mut downs) = (Vec::new(), Vec::new());
        for (i, &n) in cfg.enc_blocks.iter().enumerate() {
            encoders.push(stage(vb.pp("encoders").pp(i), c, n)?);
            downs.push(conv2d(vb.pp("downs").pp(i), c, 2 * c, 2, 0, 2, true)?);
            c *= 2;
        }
        let middle_blks = stage(vb.pp("middle_blks"), c, cfg.middle_blocks)?;
        let (mut ups, mut decoders) = (Vec::new(), Vec::new());
        for (i, &n) in cfg.dec_blocks.iter().enumerate() {
            ups.push(conv2d(
                vb.pp("ups").pp(i).pp("0"),
                c,
                2 * c,
                1,
                0,
                1,
                false,
            )?);
            c /= 2;
            decoders.push(stage(vb.pp("decoders").pp(i), c, n)?);
        }
        let ending = conv2d(vb.pp("ending"), cfg.width, 3, 3, 1, 1, true)?;
        let span = tracing::span!(tracing::Level::TRACE, "nafnet");
        Ok(Self {
            intro,
            encoders,
            downs,
            middle_blks,
            ups,
            decoders,
            ending,
            multiple: cfg.size_multiple(),
            width: cfg.width,
            span,
        })
    }

    /// Input sides must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        self.multiple
    }

    /// Channels after the intro conv.
    pub fn width(&self) -> usize {
        self.width
    }
}

impl NafNet {
    /// `(B, 3, H, W)`, sides multiples of [`Self::size_multiple`] -> (residual `(B, 3, H, W)`,
    /// bottleneck features). The bottleneck is the output of `middle_blks`:
    /// `(B, width * 2^L, H / 2^L, W / 2^L)` with `L = enc_blocks.len()`.
    pub fn forward_with_features(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let _e = self.span.enter();
        let (_, _, h, w) = xs.dims4()?;
        if h % self.multiple != 0 || w % self.multiple != 0 {
            candle_core::bail!(
                "nafnet: input sides must be multiples of {}, got {h}x{w}",
                self.multiple
            );
        }
        let mut xs = xs.apply(&self.intro)?;
        let mut skips = Vec::new();
        for (enc, down) in self.encoders.iter().zip(&self.downs) {
            xs = run(enc, xs)?;
            skips.push(xs.clone());
            xs = xs.apply(down)?;
        }
        xs = run(&self.middle_blks, xs)?;
        let bottleneck = xs.clone();
        for (dec, up) in self.decoders.iter().zip(&self.ups) {
            xs = candle_nn::ops::pixel_shuffle(&xs.apply(up)?, 2)?;
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("nafnet: skip underflow".into()))?;
            xs = run(dec, (xs + skip)?)?;
        }
        Ok((xs.apply(&self.ending)?, bottleneck))
    }
}

impl Module for NafNet {
    /// `(B, 3, H, W) -> (B, 3, H, W)`: the residual.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_features(xs)?.0)
    }
}
