//! `CondUNet`: the paper's conditional noise predictor D.
//!
//! Architecture of Palette / ADM (Saharia et al. 2022, arXiv:2111.05826; Dhariwal & Nichol 2021,
//! arXiv:2105.05233) as configured by Denoising as Adaptation (docs/method.md section 4; reference
//! github.com/KangLiao929/Noise-DA): written from that description, not translated. Tensor
//! names are the official ones (`cond_embed.{0,2}`, `input_blocks.{i}.{j}...`, `middle_block`,
//! `output_blocks`, `out.{0,2}`). Differences: dropout masks come from an RNG the caller
//! passes to [`CondUNet::forward_t`] (the network holds no random state), so a seed reproduces
//! a run on every device; no gradient checkpointing.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use daa_kernels::Conv2d;

use super::attention::AttentionBlock;
use rand::RngCore;

use super::blocks::{conv, group_norm, GroupNorm, ResBlock, Resample};
use crate::embeddings::NoiseLevelEmbedding;

/// Configuration of [`CondUNet`]. Input `(B, in_channels, H, W)` with H, W multiples of
/// `2^(len(mults)-1)`, noise levels `gamma: (B,)`; output `(B, out_channels, H, W)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CondUNetConfig {
    /// Input channels: 3 (noisy target) + 3 + 3 (the two conditions) = 9.
    pub in_channels: usize,
    /// Output channels (the predicted noise): 3.
    pub out_channels: usize,
    /// Base width (the paper: 64). The sinusoidal embedding has this width, its MLP 4x.
    pub width: usize,
    /// Width multipliers per level (the paper: 1, 2, 4, 8).
    pub mults: Vec<usize>,
    /// Residual blocks per level (the paper: 2).
    pub res_blocks: usize,
    /// Dropout inside residual blocks (the paper: 0.2).
    pub dropout: f64,
    /// Channels per attention head (the paper: 32).
    pub head_channels: usize,
    /// GroupNorm groups (the paper: 32).
    pub groups: usize,
}

impl CondUNetConfig {
    /// The paper's D: 62,643,075 parameters.
    pub fn paper() -> Self {
        Self {
            in_channels: 9,
            out_channels: 3,
            width: 64,
            mults: vec![1, 2, 4, 8],
            res_blocks: 2,
            dropout: 0.2,
            head_channels: 32,
            groups: 32,
        }
    }
    /// CPU-sized: width 16, levels 1/2/4, one residual block per level, 8 groups.
    pub fn cpu() -> Self {
        Self {
            width: 16,
            mults: vec![1, 2, 4],
            res_blocks: 1,
            groups: 8,
            ..Self::paper()
        }
    }
    /// For tests: width 16, levels 1/2.
    pub fn tiny() -> Self {
        Self {
            width: 16,
            mults: vec![1, 2],
            res_blocks: 1,
            groups: 8,
            head_channels: 16,
            ..Self::paper()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.width == 0
            || self.mults.is_empty()
            || self.res_blocks == 0
            || self.groups == 0
            || self.head_channels == 0
        {
            candle_core::bail!("cond_unet: width, mults, res_blocks, groups and head_channels must be positive: {self:?}");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            candle_core::bail!("cond_unet: dropout must be in [0, 1), got {}", self.dropout);
        }
        for m in &self.mults {
            let ch = self.width * m;
            if !ch.is_multiple_of(self.groups) {
                candle_core::bail!(
                    "cond_unet: {ch} channels do not split into {} groups",
                    self.groups
                );
            }
        }
        let top = self.width * self.mults[self.mults.len() - 1];
        if !top.is_multiple_of(self.head_channels) {
            candle_core::bail!(
                "cond_unet: middle width {top} does not split into heads of {}",
                self.head_channels
            );
        }
        Ok(())
    }

    /// Input sides must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << (self.mults.len() - 1)
    }
}

#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv2d),
    Res(ResBlock),
    Attn(AttentionBlock),
}

/// A shorter-lived copy of an optional RNG reference, so that it can be passed on many times.
pub(crate) fn reborrow<'a>(rng: &'a mut Option<&mut dyn RngCore>) -> Option<&'a mut dyn RngCore> {
    match rng {
        Some(r) => Some(&mut **r),
        None => None,
    }
}

/// The conditional noise predictor (see the module docs).
#[derive(Debug, Clone)]
pub struct CondUNet {
    cond_embed: NoiseLevelEmbedding,
    input_blocks: Vec<Vec<Layer>>,
    middle_block: Vec<Layer>,
    output_blocks: Vec<Vec<Layer>>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    cfg: CondUNetConfig,
    span: tracing::Span,
}

impl CondUNet {
    /// Creates or loads the network from `vb` (paths = official tensor names).
    pub fn new(vb: VarBuilder, cfg: &CondUNetConfig) -> Result<Self> {
        cfg.validate()?;
        let emb_dim = 4 * cfg.width;
        let (g, p) = (cfg.groups, cfg.dropout);
        let cond_embed = NoiseLevelEmbedding::new(vb.pp("cond_embed"), cfg.width, emb_dim)?;
        let mut ch = cfg.width * cfg.mults[0];
        let input_ch = ch;
        let vb_in = vb.pp("input_blocks");
        let mut input_blocks = vec![vec![Layer::Conv(conv(
            vb_in.pp("0").pp("0"),
            cfg.in_channels,
            ch,
            3,
        )?)]];
        let mut skip_chans = vec![ch];
        for (level, &mult) in cfg.mults.iter().enumerate() {
            for _ in 0..cfg.res_blocks {
                let out = cfg.width * mult;
                let vb_b = vb_in.pp(input_blocks.len()).pp("0");
                input_blocks.push(vec![Layer::Res(ResBlock::new(
                    vb_b,
                    ch,
                    out,
                    emb_dim,
                    g,
                    p,
                    Resample::None,
                )?)]);
                ch = out;
                skip_chans.push(ch);
            }
            if level + 1 != cfg.mults.len() {
                let vb_b = vb_in.pp(input_blocks.len()).pp("0");
                input_blocks.push(vec![Layer::Res(ResBlock::new(
                    vb_b,
                    ch,
                    ch,
                    emb_dim,
                    g,
                    p,
                    Resample::Down,
                )?)]);
                skip_chans.push(ch);
            }
        }
        let vb_m = vb.pp("middle_block");
        let middle_block = vec![
            Layer::Res(ResBlock::new(
                vb_m.pp("0"),
                ch,
                ch,
                emb_dim,
                g,
                p,
                Resample::None,
            )?),
            Layer::Attn(AttentionBlock::new(vb_m.pp("1"), ch, cfg.head_channels, g)?),
            Layer::Res(ResBlock::new(
                vb_m.pp("2"),
                ch,
                ch,
                emb_dim,
                g,
                p,
                Resample::None,
            )?),
        ];
        let vb_out = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for (level, &mult) in cfg.mults.iter().enumerate().rev() {
            for i in 0..=cfg.res_blocks {
                let skip = skip_chans
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("cond_unet: skip underflow".into()))?;
                let out = cfg.width * mult;
                let vb_b = vb_out.pp(output_blocks.len());
                let mut layers = vec![Layer::Res(ResBlock::new(
                    vb_b.pp("0"),
                    ch + skip,
                    out,
                    emb_dim,
                    g,
                    p,
                    Resample::None,
                )?)];
                ch = out;
                if level > 0 && i == cfg.res_blocks {
                    layers.push(Layer::Res(ResBlock::new(
                        vb_b.pp("1"),
                        ch,
                        ch,
                        emb_dim,
                        g,
                        p,
                        Resample::Up,
                    )?));
                }
                output_blocks.push(layers);
            }
        }
        let out_norm = group_norm(vb.pp("out").pp("0"), g, ch)?;
        let out_conv = conv(vb.pp("out").pp("2"), input_ch, cfg.out_channels, 3)?;
        let span = tracing::span!(tracing::Level::TRACE, "cond_unet");
        Ok(Self {
            cond_embed,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm,
            out_conv,
            cfg: cfg.clone(),
            span,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CondUNetConfig {
        &self.cfg
    }

    fn run(
        &self,
        layers: &[Layer],
        xs: Tensor,
        emb: &Tensor,
        dropout: &mut Option<&mut dyn RngCore>,
    ) -> Result<Tensor> {
        layers.iter().try_fold(xs, |xs, l| match l {
            Layer::Conv(c) => c.forward(&xs),
            Layer::Res(r) => r.forward(&xs, emb, reborrow(dropout)),
            Layer::Attn(a) => a.forward(&xs),
        })
    }

    /// Predicts the noise. `xs: (B, in_channels, H, W)` in diffusion space, `gamma: (B,)`
    /// noise levels in (0, 1]. Training mode: `dropout` is the RNG the dropout masks are drawn
    /// from (in layer order); `None` is inference (no dropout). Returns `(B, out_channels, H, W)`.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        gamma: &Tensor,
        mut dropout: Option<&mut dyn RngCore>,
    ) -> Result<Tensor> {
        let _e = self.span.enter();
        let (b, c, h, w) = xs.dims4()?;
        let m = self.cfg.size_multiple();
        if c != self.cfg.in_channels || h % m != 0 || w % m != 0 || gamma.dims() != [b] {
            candle_core::bail!(
                "cond_unet: expected ({b}, {}, H, W) with H, W multiples of {m} and gamma ({b},), got {:?} and {:?}",
                self.cfg.in_channels, xs.shape(), gamma.shape()
            );
        }
        let emb = self.cond_embed.forward(gamma, xs.dtype())?;
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = xs.clone();
        for block in &self.input_blocks {
            h = self.run(block, h, &emb, &mut dropout)?;
            hs.push(h.clone());
        }
        h = self.run(&self.middle_block, h, &emb, &mut dropout)?;
        for block in &self.output_blocks {
            let skip = hs
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("cond_unet: skip underflow".into()))?;
            h = self.run(block, Tensor::cat(&[&h, &skip], 1)?, &emb, &mut dropout)?;
        }
        self.out_norm.forward_silu(&h, None)?.apply(&self.out_conv)
    }
}
