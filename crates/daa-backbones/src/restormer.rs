//! Restormer (Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image
//! Restoration", CVPR 2022, arXiv:2111.09881; reference github.com/swz30/Restormer,
//! `basicsr/models/archs/restormer_arch.py` at commit 861974ad).
//!
//! Written from the paper and checked against the reference's structure: a 3x3 patch
//! embedding; a 4-level encoder-decoder of Transformer blocks (MDTA: multi-Dconv-head
//! *transposed* attention, i.e. attention across channels with a learned per-head
//! temperature and a depthwise 3x3 conv after the 1x1 qkv conv; GDFN: gated-Dconv feed-forward
//! with expansion 2.66 and GELU gating); 3x3 conv + pixel-unshuffle down, 3x3 conv +
//! pixel-shuffle up; 1x1 channel reductions after the skip concatenations of levels 3 and 2
//! (none at level 1, which runs at twice the width); refinement blocks; a 3x3 output conv.
//! LayerNorm over channels, with or without bias ([`LayerNormType`]).
//!
//! Tensor names are the reference's (`patch_embed.proj`, `encoder_level{1,2,3}.{i}`,
//! `down1_2.body.0`, `latent.{i}`, `up4_3.body.0`, `reduce_chan_level{3,2}`,
//! `decoder_level{3,2,1}.{i}`, `refinement.{i}`, `output`; in a block `norm1.body.weight`,
//! `attn.temperature`, `attn.qkv`, `attn.qkv_dwconv`, `attn.project_out`, `norm2.body`,
//! `ffn.project_in`, `ffn.dwconv`, `ffn.project_out`), with the same shapes, so the released
//! `.pth` weights converted to safetensors (`checkpoint["params"]`) load as they are.
//!
//! Differences: the output is the residual (the reference adds the input inside the network;
//! here `restore()` does); the dual-pixel variant (`skip_conv`, 6 input channels) is not
//! implemented; LayerNorm, softmax and the depthwise convs are built from plain candle ops so
//! that they back-propagate; initialisation is candle's (Kaiming-normal convs) rather than
//! PyTorch's Kaiming-uniform.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use daa_kernels::Conv2d;

use crate::common::{conv2d, l2_normalize_last_dim, softmax_last_dim, DepthwiseConv3x3};

/// Restormer's LayerNorm over channels (`LayerNorm_type` in the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LayerNormType {
    /// `x / sqrt(var + 1e-5) * weight`: no bias and no centring (`BiasFree`, the reference's
    /// denoising configurations).
    #[serde(rename = "bias_free")]
    BiasFree,
    /// `(x - mean) / sqrt(var + 1e-5) * weight + bias` (`WithBias`, the reference's default,
    /// used for deraining and deblurring).
    #[serde(rename = "with_bias")]
    WithBias,
}

/// Restormer configuration. Input/output `(B, 3, H, W)`, RGB, `[0, 1]`; the network runs on
/// sides that are multiples of 8 (three 2x downsamplings); `restore()` pads and crops.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestormerConfig {
    /// Channels of level 1 (`dim`; level `i` has `dim * 2^i`).
    pub dim: usize,
    /// Transformer blocks per level: encoder levels 1-3 and the latent level 4; the decoder
    /// repeats levels 3, 2, 1 (`num_blocks`).
    pub num_blocks: [usize; 4],
    /// Refinement blocks at full resolution (`num_refinement_blocks`).
    pub num_refinement_blocks: usize,
    /// Attention heads per level (`heads`); the full-resolution decoder and refinement blocks
    /// use `heads[0]` at `2 * dim` channels, as in the reference.
    pub heads: [usize; 4],
    /// GDFN hidden width = `int(channels * ffn_expansion_factor)` (the reference: 2.66).
    pub ffn_expansion_factor: f64,
    /// Biases in the block convolutions, the channel reductions and the output conv (the
    /// reference: false; its patch embedding and resampling convs never have one).
    pub bias: bool,
    /// LayerNorm variant.
    pub layer_norm: LayerNormType,
}

impl RestormerConfig {
    /// The paper's architecture with the reference's default LayerNorm (`WithBias`), as the
    /// reference trains it for deraining and motion/defocus deblurring: width 48, blocks
    /// [4, 6, 6, 8], 4 refinement blocks, heads [1, 2, 4, 8], expansion 2.66, bias-free convs.
    /// 26,126,644 parameters.
    pub fn paper() -> Self {
        Self {
            dim: 48,
            num_blocks: [4, 6, 6, 8],
            num_refinement_blocks: 4,
            heads: [1, 2, 4, 8],
            ffn_expansion_factor: 2.66,
            bias: false,
            layer_norm: LayerNormType::WithBias,
        }
    }
    /// The reference's denoising configuration (Gaussian and real denoising): [`Self::paper`]
    /// with `BiasFree` LayerNorm. 26,111,668 parameters.
    pub fn denoise() -> Self {
        Self {
            layer_norm: LayerNormType::BiasFree,
            ..Self::paper()
        }
    }
    /// CPU-sized: width 16, one block per level, no refinement block, heads [1, 2, 4, 8].
    /// Blocks at full resolution dominate the cost on a CPU (elementwise ops), hence none
    /// beyond the two the U-shape needs. 785,768 parameters.
    pub fn cpu() -> Self {
        Self {
            dim: 16,
            num_blocks: [1, 1, 1, 1],
            num_refinement_blocks: 0,
            heads: [1, 2, 4, 8],
            ffn_expansion_factor: 2.66,
            bias: false,
            layer_norm: LayerNormType::WithBias,
        }
    }
    /// For tests: width 8, one block per level, biases on so every tensor kind is exercised.
    pub fn tiny() -> Self {
        Self {
            dim: 8,
            num_blocks: [1, 1, 1, 1],
            num_refinement_blocks: 1,
            heads: [1, 2, 2, 4],
            ffn_expansion_factor: 2.66,
            bias: true,
            layer_norm: LayerNormType::WithBias,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.dim == 0 || !self.dim.is_multiple_of(2) {
            candle_core::bail!("restormer: dim must be positive and even, got {}", self.dim);
        }
        if !(self.ffn_expansion_factor.is_finite() && self.ffn_expansion_factor > 0.0) {
            candle_core::bail!(
                "restormer: ffn_expansion_factor must be positive, got {}",
                self.ffn_expansion_factor
            );
        }
        if self.hidden(self.dim) == 0 {
            candle_core::bail!(
                "restormer: ffn hidden width int({} * {}) is zero",
                self.dim,
                self.ffn_expansion_factor
            );
        }
        for (level, &heads) in self.heads.iter().enumerate() {
            let ch = self.dim << level;
            if heads == 0 || !ch.is_multiple_of(heads) {
                candle_core::bail!(
                    "restormer: heads[{level}] = {heads} must divide the {ch} channels of level {}",
                    level + 1
                );
            }
        }
        Ok(())
    }

    /// GDFN hidden width for `ch` channels: `int(ch * ffn_expansion_factor)`, as the reference.
    fn hidden(&self, ch: usize) -> usize {
        (ch as f64 * self.ffn_expansion_factor) as usize
    }

    /// Input sides must be multiples of this (8).
    pub fn size_multiple(&self) -> usize {
        8
    }
}

/// LayerNorm over the channels of NCHW input (`norm.body.weight` [+ `norm.body.bias`]).
#[derive(Debug, Clone)]
struct ChannelNorm {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl ChannelNorm {
    fn new(vb: VarBuilder, ch: usize, kind: LayerNormType) -> Result<Self> {
        let vb = vb.pp("body");
        let weight = vb.get_with_hints(ch, "weight", candle_nn::Init::Const(1.0))?;
        let bias = match kind {
            LayerNormType::WithBias => {
                Some(vb.get_with_hints(ch, "bias", candle_nn::Init::Const(0.0))?)
            }
            LayerNormType::BiasFree => None,
        };
        Ok(Self { weight, bias })
    }

    /// `(B, C, H, W) -> (B, C, H, W)`, normalised over C at every pixel, eps 1e-5. Reduces
    /// over dim 1 of the contiguous tensor (a permute to channels-last makes candle's
    /// reductions strided and several times slower).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let mu = xs.mean_keepdim(1)?;
        let xc = xs.broadcast_sub(&mu)?;
        let inv = (xc.sqr()?.mean_keepdim(1)? + 1e-5)?.sqrt()?;
        let weight = self.weight.reshape((1, c, 1, 1))?;
        match &self.bias {
            Some(b) => xc
                .broadcast_div(&inv)?
                .broadcast_mul(&weight)?
                .broadcast_add(&b.reshape((1, c, 1, 1))?),
            // BiasFree_LayerNorm: the variance is about the mean, the numerator is not centred.
            None => xs.broadcast_div(&inv)?.broadcast_mul(&weight),
        }
    }
}

/// Multi-Dconv-head transposed attention.
#[derive(Debug, Clone)]
struct Mdta {
    heads: usize,
    temperature: Tensor,
    qkv: Conv2d,
    qkv_dwconv: DepthwiseConv3x3,
    project_out: Conv2d,
}

impl Mdta {
    fn new(vb: VarBuilder, ch: usize, heads: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            heads,
            temperature: vb.get_with_hints(
                (heads, 1, 1),
                "temperature",
                candle_nn::Init::Const(1.0),
            )?,
            qkv: conv2d(vb.pp("qkv"), ch, 3 * ch, 1, 0, 1, bias)?,
            qkv_dwconv: DepthwiseConv3x3::new(vb.pp("qkv_dwconv"), 3 * ch, bias)?,
            project_out: conv2d(vb.pp("project_out"), ch, ch, 1, 0, 1, bias)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let qkv = xs.apply(&self.qkv)?.apply(&self.qkv_dwconv)?; // (B, 3C, H, W)
        let per_head = |i: usize| -> Result<Tensor> {
            // (B, C, H, W) -> (B, heads, C/heads, H*W)
            qkv.narrow(1, i * c, c)?
                .contiguous()?
                .reshape((b, self.heads, c / self.heads, h * w))
        };
        let q = l2_normalize_last_dim(&per_head(0)?)?;
        let k = l2_normalize_last_dim(&per_head(1)?)?;
        let v = per_head(2)?;
        // (B, heads, C/heads, C/heads): attention across channels.
        let attn = q
            .matmul(&k.transpose(2, 3)?)?
            .broadcast_mul(&self.temperature)?;
        let attn = softmax_last_dim(&attn)?;
        attn.matmul(&v)?
            .reshape((b, c, h, w))?
            .apply(&self.project_out)
    }
}

/// Gated-Dconv feed-forward network.
#[derive(Debug, Clone)]
struct Gdfn {
    hidden: usize,
    project_in: Conv2d,
    dwconv: DepthwiseConv3x3,
    project_out: Conv2d,
}

impl Gdfn {
    fn new(vb: VarBuilder, ch: usize, hidden: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            hidden,
            project_in: conv2d(vb.pp("project_in"), ch, 2 * hidden, 1, 0, 1, bias)?,
            dwconv: DepthwiseConv3x3::new(vb.pp("dwconv"), 2 * hidden, bias)?,
            project_out: conv2d(vb.pp("project_out"), hidden, ch, 1, 0, 1, bias)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = xs.apply(&self.project_in)?.apply(&self.dwconv)?; // (B, 2*hidden, H, W)
        let gate = xs.narrow(1, 0, self.hidden)?.gelu_erf()?;
        (gate * xs.narrow(1, self.hidden, self.hidden)?)?.apply(&self.project_out)
    }
}

#[derive(Debug, Clone)]
struct TransformerBlock {
    norm1: ChannelNorm,
    attn: Mdta,
    norm2: ChannelNorm,
    ffn: Gdfn,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, ch: usize, heads: usize, cfg: &RestormerConfig) -> Result<Self> {
        Ok(Self {
            norm1: ChannelNorm::new(vb.pp("norm1"), ch, cfg.layer_norm)?,
            attn: Mdta::new(vb.pp("attn"), ch, heads, cfg.bias)?,
            norm2: ChannelNorm::new(vb.pp("norm2"), ch, cfg.layer_norm)?,
            ffn: Gdfn::new(vb.pp("ffn"), ch, cfg.hidden(ch), cfg.bias)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.norm1.forward(xs)?)?)?;
        &xs + self.ffn.forward(&self.norm2.forward(&xs)?)?
    }
}

fn stage(
    vb: VarBuilder,
    ch: usize,
    heads: usize,
    n: usize,
    cfg: &RestormerConfig,
) -> Result<Vec<TransformerBlock>> {
    (0..n)
        .map(|i| TransformerBlock::new(vb.pp(i), ch, heads, cfg))
        .collect()
}

fn run(blocks: &[TransformerBlock], xs: Tensor) -> Result<Tensor> {
    blocks.iter().try_fold(xs, |xs, b| b.forward(&xs))
}

/// Restormer (see the module docs).
#[derive(Debug, Clone)]
pub struct Restormer {
    patch_embed: Conv2d,
    encoder_level1: Vec<TransformerBlock>,
    down1_2: Conv2d,
    encoder_level2: Vec<TransformerBlock>,
    down2_3: Conv2d,
    encoder_level3: Vec<TransformerBlock>,
    down3_4: Conv2d,
    latent: Vec<TransformerBlock>,
    up4_3: Conv2d,
    reduce_chan_level3: Conv2d,
    decoder_level3: Vec<TransformerBlock>,
    up3_2: Conv2d,
    reduce_chan_level2: Conv2d,
    decoder_level2: Vec<TransformerBlock>,
    up2_1: Conv2d,
    decoder_level1: Vec<TransformerBlock>,
    refinement: Vec<TransformerBlock>,
    output: Conv2d,
    cfg: RestormerConfig,
    span: tracing::Span,
}

impl Restormer {
    /// Creates or loads the network from `vb` (paths = the reference's tensor names).
    pub fn new(vb: VarBuilder, cfg: &RestormerConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, nb, hd, bias) = (cfg.dim, cfg.num_blocks, cfg.heads, cfg.bias);
        let conv3 = |name: &str, cin: usize, cout: usize, bias: bool| {
            conv2d(vb.pp(name), cin, cout, 3, 1, 1, bias)
        };
        // Down: 3x3 conv to half the channels, then pixel-unshuffle (x4 channels, /2 sides).
        let down =
            |name: &str, ch: usize| conv2d(vb.pp(name).pp("body.0"), ch, ch / 2, 3, 1, 1, false);
        // Up: 3x3 conv to twice the channels, then pixel-shuffle (/4 channels, x2 sides).
        let up =
            |name: &str, ch: usize| conv2d(vb.pp(name).pp("body.0"), ch, 2 * ch, 3, 1, 1, false);
        let conv1 =
            |name: &str, cin: usize, cout: usize| conv2d(vb.pp(name), cin, cout, 1, 0, 1, bias);
        Ok(Self {
            // The reference's patch embedding is bias-free whatever `bias` says.
            patch_embed: conv2d(vb.pp("patch_embed").pp("proj"), 3, d, 3, 1, 1, false)?,
            encoder_level1: stage(vb.pp("encoder_level1"), d, hd[0], nb[0], cfg)?,
            down1_2: down("down1_2", d)?,
            encoder_level2: stage(vb.pp("encoder_level2"), 2 * d, hd[1], nb[1], cfg)?,
            down2_3: down("down2_3", 2 * d)?,
            encoder_level3: stage(vb.pp("encoder_level3"), 4 * d, hd[2], nb[2], cfg)?,
            down3_4: down("down3_4", 4 * d)?,
            latent: stage(vb.pp("latent"), 8 * d, hd[3], nb[3], cfg)?,
            up4_3: up("up4_3", 8 * d)?,
            reduce_chan_level3: conv1("reduce_chan_level3", 8 * d, 4 * d)?,
            decoder_level3: stage(vb.pp("decoder_level3"), 4 * d, hd[2], nb[2], cfg)?,
            up3_2: up("up3_2", 4 * d)?,
            reduce_chan_level2: conv1("reduce_chan_level2", 4 * d, 2 * d)?,
            decoder_level2: stage(vb.pp("decoder_level2"), 2 * d, hd[1], nb[1], cfg)?,
            up2_1: up("up2_1", 2 * d)?,
            decoder_level1: stage(vb.pp("decoder_level1"), 2 * d, hd[0], nb[0], cfg)?,
            refinement: stage(
                vb.pp("refinement"),
                2 * d,
                hd[0],
                cfg.num_refinement_blocks,
                cfg,
            )?,
            output: conv3("output", 2 * d, 3, bias)?,
            cfg: cfg.clone(),
            span: tracing::span!(tracing::Level::TRACE, "restormer"),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RestormerConfig {
        &self.cfg
    }

    /// `(B, 3, H, W)`, sides multiples of 8 -> (residual `(B, 3, H, W)`, bottleneck features).
    /// The bottleneck is the output of the `latent` blocks: `(B, 8 * dim, H/8, W/8)`.
    pub fn forward_with_features(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let _e = self.span.enter();
        let (_, _, h, w) = xs.dims4()?;
        let m = self.cfg.size_multiple();
        if h % m != 0 || w % m != 0 {
            candle_core::bail!(
                "restormer: input sides must be multiples of {m}, got {h}x{w} (use restore())"
            );
        }
        let unshuffle = |xs: Tensor, conv: &Conv2d| -> Result<Tensor> {
            candle_nn::ops::pixel_unshuffle(&xs.apply(conv)?, 2)
        };
        let shuffle = |xs: &Tensor, conv: &Conv2d| -> Result<Tensor> {
            candle_nn::ops::pixel_shuffle(&xs.apply(conv)?, 2)
        };
        let enc1 = run(&self.encoder_level1, xs.apply(&self.patch_embed)?)?; // (B, d, H, W)
        let enc2 = run(
            &self.encoder_level2,
            unshuffle(enc1.clone(), &self.down1_2)?,
        )?; // 2d, /2
        let enc3 = run(
            &self.encoder_level3,
            unshuffle(enc2.clone(), &self.down2_3)?,
        )?; // 4d, /4
        let latent = run(&self.latent, unshuffle(enc3.clone(), &self.down3_4)?)?; // 8d, /8
        let dec3 = Tensor::cat(&[&shuffle(&latent, &self.up4_3)?, &enc3], 1)?; // 8d, /4
        let dec3 = run(&self.decoder_level3, dec3.apply(&self.reduce_chan_level3)?)?; // 4d
        let dec2 = Tensor::cat(&[&shuffle(&dec3, &self.up3_2)?, &enc2], 1)?; // 4d, /2
        let dec2 = run(&self.decoder_level2, dec2.apply(&self.reduce_chan_level2)?)?; // 2d
        let dec1 = Tensor::cat(&[&shuffle(&dec2, &self.up2_1)?, &enc1], 1)?; // 2d, full size
        let dec1 = run(&self.decoder_level1, dec1)?;
        let out = run(&self.refinement, dec1)?.apply(&self.output)?; // (B, 3, H, W)
        Ok((out, latent))
    }
}

impl Module for Restormer {
    /// `(B, 3, H, W) -> (B, 3, H, W)`: the residual.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_features(xs)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_width_truncates_like_python_int() {
        let cfg = RestormerConfig::paper();
        // Python: [int(c * 2.66) for c in (48, 96, 192, 384)] == [127, 255, 510, 1021].
        let got: Vec<usize> = [48, 96, 192, 384].iter().map(|&c| cfg.hidden(c)).collect();
        assert_eq!(got, vec![127, 255, 510, 1021]);
    }
}
