//! Uformer (Wang et al., "Uformer: A General U-Shaped Transformer for Image Restoration",
//! CVPR 2022, arXiv:2106.03106; reference github.com/ZhendongWang6/Uformer, `model.py` at
//! commit 4ce7d9b9).
//!
//! Written from the paper and checked against the reference's structure: a 3x3 input
//! projection with LeakyReLU; `L` encoder levels of LeWin Transformer blocks, each followed by
//! a 4x4 stride-2 conv that halves the sides and doubles the channels; a bottleneck level; `L`
//! decoder levels, each a 2x2 stride-2 transposed conv (halving the channels) whose output is
//! concatenated with the encoder's skip, so decoder level `i` runs at twice the encoder's
//! width; a 3x3 output projection from `2 * embed_dim` channels. The paper's Uformer has
//! `L = 4`.
//!
//! A LeWin block is `x + W-MSA(LN(x))` then `x + LeFF(LN(x))`: non-overlapping `win x win`
//! window self-attention with a learned relative position bias (`(2 win - 1)^2` entries per
//! head), in every second block on windows shifted by `win / 2` with the shifted-window mask of
//! the reference (-100 between regions that the cyclic shift brought together); LeFF is
//! linear -> GELU -> depthwise 3x3 conv -> GELU -> linear. With `modulator`, the decoder blocks
//! add a learned `(win * win, C)` tensor (the multi-scale restoration modulator, an
//! `nn.Embedding` weight) to every window before the attention.
//!
//! Tensor names are the reference's (`input_proj.proj.0`, `encoderlayer_{i}.blocks.{j}`,
//! `dowsample_{i}.conv.0` (sic), `conv.blocks.{j}`, `upsample_{i}.deconv.0`,
//! `decoderlayer_{i}.blocks.{j}`, `output_proj.proj.0`; in a block `norm1`,
//! `attn.relative_position_bias_table`, `attn.qkv.to_q`, `attn.qkv.to_kv`, `attn.proj`,
//! `norm2`, `mlp.linear1.0`, `mlp.dwconv.0`, `mlp.linear2.0`, `modulator.weight`), with the same
//! shapes, so the released weights (`checkpoint["state_dict"]`) load; the reference's
//! `relative_position_index` buffers are recomputed here and not read.
//!
//! Differences: the output is the residual (the reference adds the input inside the network;
//! here `restore()` does); stochastic depth (drop path, 0.1 in the reference) and dropout are
//! not implemented (models here hold no random state); the reference reads `H = W =
//! sqrt(tokens)` and so runs on square inputs only, here any `H x W` whose sides are multiples
//! of `2^L * win` works; the reference fixes at construction, from `img_size`, which levels are
//! small enough (`min(H, W) <= win`) to skip the shifted windows, here it is decided from the
//! actual feature size, which agrees with the reference when the input is `img_size`; the
//! `token_projection = "conv"` and `token_mlp = "mlp"` variants and the cross modulator are not
//! implemented. Initialisation follows the reference's `_init_weights` for linear and norm
//! layers; convs use candle's Kaiming-normal.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use daa_kernels::Conv2d;

use crate::common::{
    conv2d, layer_norm_last_dim, leaky_relu, softmax_last_dim, DepthwiseConv3x3, Linear,
};

/// Uformer configuration. Input/output `(B, 3, H, W)`, RGB, `[0, 1]`; the network runs on
/// sides that are multiples of `2^L * win_size` (`L` = number of encoder levels); `restore()`
/// pads and crops.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UformerConfig {
    /// Channels of the first level (`embed_dim`, the paper's `C`).
    pub embed_dim: usize,
    /// LeWin blocks per level: `L` encoder levels, the bottleneck, `L` decoder levels
    /// (`depths`, length `2L + 1`).
    pub depths: Vec<usize>,
    /// Attention heads per level, same layout as `depths` (`num_heads`).
    pub num_heads: Vec<usize>,
    /// Window side (`win_size`).
    pub win_size: usize,
    /// LeFF hidden width = `int(channels * mlp_ratio)` (`mlp_ratio`, the reference: 4).
    pub mlp_ratio: f64,
    /// Biases in the q and kv projections (`qkv_bias`).
    pub qkv_bias: bool,
    /// Shifted windows in every second block (`shift_flag`, the reference: true).
    pub shift: bool,
    /// The learnable multi-scale modulator in the decoder blocks (`modulator`).
    pub modulator: bool,
}

impl UformerConfig {
    /// Uformer-B, the paper's main model (SIDD, GoPro, ...): `C = 32`, depths
    /// [1, 2, 8, 8, 2, 8, 8, 2, 1], heads [1, 2, 4, 8, 16, 16, 8, 4, 2], 8x8 windows, LeFF
    /// ratio 4, with the modulator. 50,880,946 parameters (the paper's 50.88 M).
    pub fn paper() -> Self {
        Self {
            embed_dim: 32,
            depths: vec![1, 2, 8, 8, 2, 8, 8, 2, 1],
            num_heads: vec![1, 2, 4, 8, 16, 16, 8, 4, 2],
            win_size: 8,
            mlp_ratio: 4.0,
            qkv_bias: true,
            shift: true,
            modulator: true,
        }
    }
    /// Uformer-S: `C = 32`, two blocks per level, no modulator. 20,628,317 parameters (the paper's
    /// 20.63 M).
    pub fn small() -> Self {
        Self {
            depths: vec![2; 9],
            modulator: false,
            ..Self::paper()
        }
    }
    /// Uformer-T: `C = 16`, two blocks per level, no modulator. 5,230,413 parameters (the paper's
    /// 5.23 M).
    pub fn tiny_paper() -> Self {
        Self {
            embed_dim: 16,
            ..Self::small()
        }
    }
    /// CPU-sized: `C = 16`, two levels, 4x4 windows, so sides are multiples of 16 (the CPU
    /// training patch of 48 works); two blocks in the inner levels so that windows shift; with
    /// the modulator. 314,442 parameters.
    pub fn cpu() -> Self {
        Self {
            embed_dim: 16,
            depths: vec![1, 2, 2, 2, 1],
            num_heads: vec![1, 2, 4, 4, 2],
            win_size: 4,
            mlp_ratio: 4.0,
            qkv_bias: true,
            shift: true,
            modulator: true,
        }
    }
    /// For tests: `C = 8`, two levels, 2x2 windows (sides multiples of 8); two blocks where
    /// the second one shifts its windows.
    pub fn tiny() -> Self {
        Self {
            embed_dim: 8,
            depths: vec![2, 1, 1, 1, 2],
            num_heads: vec![1, 2, 4, 4, 2],
            win_size: 2,
            mlp_ratio: 2.0,
            qkv_bias: true,
            shift: true,
            modulator: true,
        }
    }

    /// Number of encoder (= decoder) levels `L`.
    pub fn levels(&self) -> usize {
        self.depths.len() / 2
    }

    /// Channels of every level in `depths` order: encoders `C * 2^i`, the bottleneck
    /// `C * 2^L`, decoders twice their encoder's width.
    fn level_channels(&self) -> Vec<usize> {
        let l = self.levels();
        let enc = (0..l).map(|i| self.embed_dim << i);
        let dec = (0..l).rev().map(|i| 2 * (self.embed_dim << i));
        enc.chain(std::iter::once(self.embed_dim << l))
            .chain(dec)
            .collect()
    }

    fn hidden(&self, ch: usize) -> usize {
        (ch as f64 * self.mlp_ratio) as usize
    }

    fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.win_size == 0 {
            candle_core::bail!("uformer: embed_dim and win_size must be positive, got {self:?}");
        }
        if self.depths.len().is_multiple_of(2) || self.depths.len() < 3 {
            candle_core::bail!(
                "uformer: depths needs 2L+1 >= 3 (L encoders, bottleneck, L decoders), got {:?}",
                self.depths
            );
        }
        if self.num_heads.len() != self.depths.len() {
            candle_core::bail!(
                "uformer: num_heads {:?} must have one entry per level of depths {:?}",
                self.num_heads,
                self.depths
            );
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.hidden(self.embed_dim) == 0
        {
            candle_core::bail!(
                "uformer: mlp_ratio must give a positive width, got {}",
                self.mlp_ratio
            );
        }
        for (level, (&heads, ch)) in self.num_heads.iter().zip(self.level_channels()).enumerate() {
            if heads == 0 || !ch.is_multiple_of(heads) {
                candle_core::bail!(
                    "uformer: num_heads[{level}] = {heads} must divide the level's {ch} channels"
                );
            }
        }
        Ok(())
    }

    /// Input sides must be multiples of this: `2^L * win_size`.
    pub fn size_multiple(&self) -> usize {
        (1 << self.levels()) * self.win_size
    }
}

/// LayerNorm over the last (channel) dim, eps 1e-5 (`nn.LayerNorm`).
#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(vb: VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(ch, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(ch, "bias", candle_nn::Init::Const(0.0))?,
        })
    }
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        layer_norm_last_dim(xs, &self.weight, Some(&self.bias), 1e-5)
    }
}

/// `index[i * N + j]` = row of the relative position bias table for tokens `i`, `j` of a
/// `win x win` window (`N = win^2`), as the reference's `relative_position_index`.
fn relative_position_index(win: usize) -> Vec<u32> {
    let n = win * win;
    let mut idx = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dh = (i / win) + win - 1 - (j / win);
            let dw = (i % win) + win - 1 - (j % win);
            idx.push((dh * (2 * win - 1) + dw) as u32);
        }
    }
    idx
}

/// The shifted-window attention mask `(nW, N, N)` for an `h x w` map (after the cyclic shift
/// by `-shift`): 0 between tokens of the same region, -100 otherwise. Windows in row-major
/// order, as [`window_partition`] produces them.
fn shift_mask(h: usize, w: usize, win: usize, shift: usize) -> Vec<f32> {
    let region = |p: usize, side: usize| -> usize {
        if p < side - win {
            0
        } else if p < side - shift {
            1
        } else {
            2
        }
    };
    let (nh, nw, n) = (h / win, w / win, win * win);
    let mut mask = Vec::with_capacity(nh * nw * n * n);
    for wy in 0..nh {
        for wx in 0..nw {
            let labels: Vec<usize> = (0..n)
                .map(|t| {
                    let (y, x) = (wy * win + t / win, wx * win + t % win);
                    region(y, h) * 3 + region(x, w)
                })
                .collect();
            for &li in &labels {
                for &lj in &labels {
                    mask.push(if li == lj { 0.0 } else { -100.0 });
                }
            }
        }
    }
    mask
}

/// `(B, H, W, C) -> (B * nW, win * win, C)`, windows in row-major order.
fn window_partition(xs: &Tensor, win: usize) -> Result<Tensor> {
    let (b, h, w, c) = xs.dims4()?;
    xs.reshape((b, h / win, win, w / win, win, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (h / win) * (w / win), win * win, c))
}

/// Inverse of [`window_partition`]: `(B * nW, win * win, C) -> (B, H, W, C)`.
fn window_reverse(xs: &Tensor, win: usize, b: usize, h: usize, w: usize) -> Result<Tensor> {
    let c = xs.dim(2)?;
    xs.reshape((b, h / win, w / win, win, win, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, h, w, c))
}

/// Window multi-head self-attention with relative position bias (`attn`).
#[derive(Debug, Clone)]
struct WindowAttention {
    heads: usize,
    win: usize,
    relative_position_bias_table: Tensor,
    to_q: Linear,
    to_kv: Linear,
    proj: Linear,
}

impl WindowAttention {
    fn new(vb: VarBuilder, ch: usize, heads: usize, cfg: &UformerConfig) -> Result<Self> {
        let win = cfg.win_size;
        Ok(Self {
            heads,
            win,
            relative_position_bias_table: vb.get_with_hints(
                ((2 * win - 1) * (2 * win - 1), heads),
                "relative_position_bias_table",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            to_q: Linear::new(vb.pp("qkv").pp("to_q"), ch, ch, cfg.qkv_bias)?,
            to_kv: Linear::new(vb.pp("qkv").pp("to_kv"), ch, 2 * ch, cfg.qkv_bias)?,
            proj: Linear::new(vb.pp("proj"), ch, ch, true)?,
        })
    }

    /// `(B * nW, N, C) -> (B * nW, N, C)`; `mask`: `(nW, N, N)` added to the logits.
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (bw, n, c) = xs.dims3()?;
        let hd = c / self.heads;
        // (B', N, C) -> (B', heads, N, hd)
        let q = self
            .to_q
            .forward(xs)?
            .reshape((bw, n, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let kv = self
            .to_kv
            .forward(xs)?
            .reshape((bw, n, 2, self.heads, hd))?;
        let k = kv
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let v = kv
            .narrow(2, 1, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let q = (q * (hd as f64).powf(-0.5))?;
        let attn = q.matmul(&k.transpose(2, 3)?)?; // (B', heads, N, N)
        let idx = Tensor::from_vec(relative_position_index(self.win), n * n, xs.device())?;
        let bias = self
            .relative_position_bias_table
            .index_select(&idx, 0)? // (N*N, heads)
            .reshape((n, n, self.heads))?
            .permute((2, 0, 1))?; // (heads, N, N)
        let attn = attn.broadcast_add(&bias)?;
        let attn = match mask {
            Some(mask) => {
                let nw = mask.dim(0)?;
                attn.reshape((bw / nw, nw, self.heads, n, n))?
                    .broadcast_add(&mask.unsqueeze(1)?.unsqueeze(0)?)?
                    .reshape((bw, self.heads, n, n))?
            }
            None => attn,
        };
        let attn = softmax_last_dim(&attn)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((bw, n, c))?;
        self.proj.forward(&out)
    }
}

/// Locally-enhanced feed-forward network (`mlp`).
#[derive(Debug, Clone)]
struct LeFF {
    linear1: Linear,
    dwconv: DepthwiseConv3x3,
    linear2: Linear,
}

impl LeFF {
    fn new(vb: VarBuilder, ch: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            linear1: Linear::new(vb.pp("linear1").pp("0"), ch, hidden, true)?,
            dwconv: DepthwiseConv3x3::new(vb.pp("dwconv").pp("0"), hidden, true)?,
            linear2: Linear::new(vb.pp("linear2").pp("0"), hidden, ch, true)?,
        })
    }
    /// `(B, H, W, C) -> (B, H, W, C)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.linear1.forward(xs)?.gelu_erf()?; // (B, H, W, hidden)
        let xs = xs
            .permute((0, 3, 1, 2))?
            .apply(&self.dwconv)?
            .gelu_erf()?
            .permute((0, 2, 3, 1))?;
        self.linear2.forward(&xs)
    }
}

/// Locally-enhanced window Transformer block.
#[derive(Debug, Clone)]
struct LeWinBlock {
    norm1: Norm,
    attn: WindowAttention,
    norm2: Norm,
    mlp: LeFF,
    modulator: Option<Tensor>,
    win: usize,
    /// Shift of this block's windows when the feature map is larger than one window.
    shift: usize,
}

impl LeWinBlock {
    fn new(
        vb: VarBuilder,
        ch: usize,
        heads: usize,
        block_idx: usize,
        modulator: bool,
        cfg: &UformerConfig,
    ) -> Result<Self> {
        let win = cfg.win_size;
        let modulator = if modulator {
            // nn.Embedding's default initialisation, N(0, 1).
            Some(vb.pp("modulator").get_with_hints(
                (win * win, ch),
                "weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: Norm::new(vb.pp("norm1"), ch)?,
            attn: WindowAttention::new(vb.pp("attn"), ch, heads, cfg)?,
            norm2: Norm::new(vb.pp("norm2"), ch)?,
            mlp: LeFF::new(vb.pp("mlp"), ch, cfg.hidden(ch))?,
            modulator,
            win,
            shift: if cfg.shift && block_idx % 2 == 1 {
                win / 2
            } else {
                0
            },
        })
    }

    /// `(B, H, W, C) -> (B, H, W, C)`, sides multiples of the window.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, h, w, _) = xs.dims4()?;
        let win = self.win;
        // As the reference: no shift when one window covers a side.
        let shift = if h.min(w) <= win { 0 } else { self.shift };
        let ys = self.norm1.forward(xs)?;
        let ys = if shift > 0 {
            ys.roll(-(shift as i32), 1)?.roll(-(shift as i32), 2)?
        } else {
            ys
        };
        let windows = window_partition(&ys, win)?; // (B * nW, N, C)
        let windows = match &self.modulator {
            Some(m) => windows.broadcast_add(m)?,
            None => windows,
        };
        let mask = if shift > 0 {
            let nw = (h / win) * (w / win);
            let m = Tensor::from_vec(
                shift_mask(h, w, win, shift),
                (nw, win * win, win * win),
                xs.device(),
            )?;
            Some(m.to_dtype(xs.dtype())?)
        } else {
            None
        };
        let ys = self.attn.forward(&windows, mask.as_ref())?;
        let ys = window_reverse(&ys, win, b, h, w)?;
        let ys = if shift > 0 {
            ys.roll(shift as i32, 1)?.roll(shift as i32, 2)?
        } else {
            ys
        };
        let xs = (xs + ys)?;
        &xs + self.mlp.forward(&self.norm2.forward(&xs)?)?
    }
}

#[derive(Debug, Clone)]
struct Layer {
    blocks: Vec<LeWinBlock>,
}

impl Layer {
    fn new(
        vb: VarBuilder,
        ch: usize,
        heads: usize,
        depth: usize,
        modulator: bool,
        cfg: &UformerConfig,
    ) -> Result<Self> {
        let vb = vb.pp("blocks");
        let blocks = (0..depth)
            .map(|j| LeWinBlock::new(vb.pp(j), ch, heads, j, modulator, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { blocks })
    }
    fn forward(&self, xs: Tensor) -> Result<Tensor> {
        self.blocks.iter().try_fold(xs, |xs, b| b.forward(&xs))
    }
}

/// 2x2 stride-2 transposed convolution (`nn.ConvTranspose2d(cin, cout, 2, stride=2)`) on
/// `(B, H, W, C)` tokens, as one matrix product: the 2x2 output patches do not overlap.
#[derive(Debug, Clone)]
struct Upsample {
    /// `(cin, cout, 2, 2)`, PyTorch's layout.
    weight: Tensor,
    bias: Tensor,
}

impl Upsample {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let vb = vb.pp("deconv").pp("0");
        // PyTorch's default: U(-1/sqrt(fan_in), ...), fan_in = weight.size(1) * 2 * 2.
        let bound = 1.0 / ((cout * 4) as f64).sqrt();
        let uni = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((cin, cout, 2, 2), "weight", uni)?,
            bias: vb.get_with_hints(cout, "bias", uni)?,
        })
    }
    /// `(B, H, W, Cin) -> (B, 2H, 2W, Cout)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, h, w, cin) = xs.dims4()?;
        let cout = self.weight.dim(1)?;
        let ys = xs
            .reshape((b * h * w, cin))?
            .matmul(&self.weight.reshape((cin, cout * 4))?)?; // (BHW, Cout * 2 * 2)
        ys.reshape((b, h, w, cout, 2, 2))?
            .permute((0, 1, 4, 2, 5, 3))? // (B, H, 2, W, 2, Cout)
            .contiguous()?
            .reshape((b, 2 * h, 2 * w, cout))?
            .broadcast_add(&self.bias)
    }
}

/// `(B, H, W, C)` tokens through an NCHW conv and back.
fn conv_tokens(xs: &Tensor, conv: &Conv2d) -> Result<Tensor> {
    xs.permute((0, 3, 1, 2))?.apply(conv)?.permute((0, 2, 3, 1))
}

/// Uformer (see the module docs).
#[derive(Debug, Clone)]
pub struct Uformer {
    input_proj: Conv2d,
    encoderlayers: Vec<Layer>,
    dowsamples: Vec<Conv2d>,
    conv: Layer,
    upsamples: Vec<Upsample>,
    decoderlayers: Vec<Layer>,
    output_proj: Conv2d,
    cfg: UformerConfig,
    span: tracing::Span,
}

impl Uformer {
    /// Creates or loads the network from `vb` (paths = the reference's tensor names).
    pub fn new(vb: VarBuilder, cfg: &UformerConfig) -> Result<Self> {
        cfg.validate()?;
        let (l, c) = (cfg.levels(), cfg.embed_dim);
        let chans = cfg.level_channels();
        let mut encoderlayers = Vec::with_capacity(l);
        let mut dowsamples = Vec::with_capacity(l);
        for (i, &ch) in chans.iter().take(l).enumerate() {
            encoderlayers.push(Layer::new(
                vb.pp(format!("encoderlayer_{i}")),
                ch,
                cfg.num_heads[i],
                cfg.depths[i],
                false,
                cfg,
            )?);
            dowsamples.push(conv2d(
                vb.pp(format!("dowsample_{i}")).pp("conv.0"),
                ch,
                2 * ch,
                4,
                1,
                2,
                true,
            )?);
        }
        let conv = Layer::new(
            vb.pp("conv"),
            chans[l],
            cfg.num_heads[l],
            cfg.depths[l],
            false,
            cfg,
        )?;
        let mut upsamples = Vec::with_capacity(l);
        let mut decoderlayers = Vec::with_capacity(l);
        let mut prev = chans[l];
        for i in 0..l {
            let level = l + 1 + i;
            let skip = c << (l - 1 - i);
            upsamples.push(Upsample::new(vb.pp(format!("upsample_{i}")), prev, skip)?);
            decoderlayers.push(Layer::new(
                vb.pp(format!("decoderlayer_{i}")),
                chans[level],
                cfg.num_heads[level],
                cfg.depths[level],
                cfg.modulator,
                cfg,
            )?);
            prev = chans[level];
        }
        Ok(Self {
            input_proj: conv2d(vb.pp("input_proj").pp("proj.0"), 3, c, 3, 1, 1, true)?,
            encoderlayers,
            dowsamples,
            conv,
            upsamples,
            decoderlayers,
            output_proj: conv2d(vb.pp("output_proj").pp("proj.0"), 2 * c, 3, 3, 1, 1, true)?,
            cfg: cfg.clone(),
            span: tracing::span!(tracing::Level::TRACE, "uformer"),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UformerConfig {
        &self.cfg
    }

    /// `(B, 3, H, W)`, sides multiples of [`UformerConfig::size_multiple`] -> (residual
    /// `(B, 3, H, W)`, bottleneck features). The bottleneck is the output of the `conv` level,
    /// as NCHW: `(B, embed_dim * 2^L, H / 2^L, W / 2^L)`.
    pub fn forward_with_features(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let _e = self.span.enter();
        let (_, _, h, w) = xs.dims4()?;
        let m = self.cfg.size_multiple();
        if h % m != 0 || w % m != 0 {
            candle_core::bail!(
                "uformer: input sides must be multiples of {m}, got {h}x{w} (use restore())"
            );
        }
        // (B, 3, H, W) -> (B, H, W, C) tokens.
        let mut ys = leaky_relu(&xs.apply(&self.input_proj)?, 0.01)?.permute((0, 2, 3, 1))?;
        let mut skips = Vec::with_capacity(self.encoderlayers.len());
        for (enc, down) in self.encoderlayers.iter().zip(&self.dowsamples) {
            ys = enc.forward(ys)?;
            skips.push(ys.clone());
            ys = conv_tokens(&ys, down)?; // sides / 2, channels x 2
        }
        let bottleneck = self.conv.forward(ys)?;
        let mut ys = bottleneck.clone();
        for (up, dec) in self.upsamples.iter().zip(&self.decoderlayers) {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("uformer: skip underflow".into()))?;
            ys = Tensor::cat(&[&up.forward(&ys)?, &skip], 3)?; // sides x 2
            ys = dec.forward(ys)?;
        }
        let out = conv_tokens(&ys, &self.output_proj)?.permute((0, 3, 1, 2))?;
        Ok((out, bottleneck.permute((0, 3, 1, 2))?))
    }
}

impl Module for Uformer {
    /// `(B, 3, H, W) -> (B, 3, H, W)`: the residual.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_features(xs)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn relative_index_matches_the_reference_formula() {
        // win 2: tokens (0,0),(0,1),(1,0),(1,1); index = (dh + 1) * 3 + (dw + 1).
        let idx = relative_position_index(2);
        assert_eq!(idx[0], 4); // same token
        assert_eq!(idx[1], 3); // i=(0,0), j=(0,1): dh 0, dw -1
        assert_eq!(idx[3], 0); // i=(0,0), j=(1,1): dh -1, dw -1
        assert_eq!(idx[3 * 4], 8); // i=(1,1), j=(0,0)
        assert!(idx.iter().all(|&v| v < 9));
    }

    #[test]
    fn windows_round_trip() -> Result<()> {
        let x = Tensor::arange(0f32, 2. * 4. * 6. * 3., &Device::Cpu)?.reshape((2, 4, 6, 3))?;
        let w = window_partition(&x, 2)?;
        assert_eq!(w.dims(), &[12, 4, 3]);
        // The second window of the first image starts at (row 0, col 2).
        let first = w.get(1)?.get(0)?.to_vec1::<f32>()?;
        assert_eq!(first, x.get(0)?.get(0)?.get(2)?.to_vec1::<f32>()?);
        let back = window_reverse(&w, 2, 2, 4, 6)?;
        let diff = (back - x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn shift_mask_separates_wrapped_regions() {
        // 4x4 map, 2x2 windows, shift 1: the last window holds tokens from 4 regions.
        let m = shift_mask(4, 4, 2, 1);
        let (n, nw) = (4, 4);
        assert_eq!(m.len(), nw * n * n);
        assert!(
            m[..n * n].iter().all(|&v| v == 0.0),
            "first window is one region"
        );
        let last = &m[3 * n * n..];
        for i in 0..n {
            for j in 0..n {
                assert_eq!(last[i * n + j] == 0.0, i == j, "({i},{j})");
            }
        }
    }

    #[test]
    fn upsample_matches_conv_transpose() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 4, 5), &dev)?; // (B, H, W, Cin)
        let up = Upsample {
            weight: Tensor::randn(0f32, 1., (5, 6, 2, 2), &dev)?,
            bias: Tensor::randn(0f32, 1., 6, &dev)?,
        };
        let ours = up.forward(&x)?;
        let theirs = x
            .permute((0, 3, 1, 2))?
            .conv_transpose2d(&up.weight, 0, 0, 2, 1)?
            .broadcast_add(&up.bias.reshape((1, 6, 1, 1))?)?
            .permute((0, 2, 3, 1))?;
        let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }

    #[test]
    fn dtype_of_mask_follows_input() -> Result<()> {
        let cfg = UformerConfig::tiny();
        let vb = VarBuilder::zeros(DType::F64, &Device::Cpu);
        let net = Uformer::new(vb, &cfg)?;
        let x = Tensor::zeros((1, 3, 16, 16), DType::F64, &Device::Cpu)?;
        let (y, f) = net.forward_with_features(&x)?;
        assert_eq!(y.dims(), &[1, 3, 16, 16]);
        assert_eq!(f.dims(), &[1, 32, 4, 4]);
        Ok(())
    }
}
