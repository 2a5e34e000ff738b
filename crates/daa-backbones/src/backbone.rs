use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::common::pad_replicate_to_multiple;
use crate::{
    DnCnn, DnCnnConfig, NafNet, NafNetConfig, Restormer, RestormerConfig, UNet, UNetConfig,
    Uformer, UformerConfig,
};

/// Which restoration network, with its configuration. Serialised with a `kind` tag:
/// `{"kind": "unet", "width": 64, ...}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
pub enum BackboneConfig {
    /// The paper's U-Net ([`UNetConfig`]).
    #[serde(rename = "unet")]
    UNet(UNetConfig),
    /// DnCNN ([`DnCnnConfig`]).
    #[serde(rename = "dncnn")]
    DnCnn(DnCnnConfig),
    /// NAFNet ([`NafNetConfig`]).
    #[serde(rename = "nafnet")]
    NafNet(NafNetConfig),
    /// Restormer ([`RestormerConfig`]).
    #[serde(rename = "restormer")]
    Restormer(RestormerConfig),
    /// Uformer ([`UformerConfig`]).
    #[serde(rename = "uformer")]
    Uformer(UformerConfig),
}

impl BackboneConfig {
    /// Builds the network, creating or loading its weights through `vb`.
    pub fn build(&self, vb: VarBuilder) -> Result<Backbone> {
        Ok(match self {
            Self::UNet(c) => Backbone::UNet(UNet::new(vb, c)?),
            Self::DnCnn(c) => Backbone::DnCnn(DnCnn::new(vb, c)?),
            Self::NafNet(c) => Backbone::NafNet(NafNet::new(vb, c)?),
            Self::Restormer(c) => Backbone::Restormer(Box::new(Restormer::new(vb, c)?)),
            Self::Uformer(c) => Backbone::Uformer(Uformer::new(vb, c)?),
        })
    }

    /// Input sides must be multiples of this for [`Backbone::residual`].
    pub fn size_multiple(&self) -> usize {
        match self {
            Self::UNet(c) => c.size_multiple(),
            Self::DnCnn(_) => 1,
            Self::NafNet(c) => c.size_multiple(),
            Self::Restormer(c) => c.size_multiple(),
            Self::Uformer(c) => c.size_multiple(),
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::UNet(_) => "unet",
            Self::DnCnn(_) => "dncnn",
            Self::NafNet(_) => "nafnet",
            Self::Restormer(_) => "restormer",
            Self::Uformer(_) => "uformer",
        }
    }
}

/// A built restoration network. `R(x)` is a residual; `restore(x) = x + R(x)`.
#[derive(Debug, Clone)]
pub enum Backbone {
    /// The paper's U-Net.
    UNet(UNet),
    /// DnCNN.
    DnCnn(DnCnn),
    /// NAFNet.
    NafNet(NafNet),
    /// Restormer (boxed: its many layers would make every variant large).
    Restormer(Box<Restormer>),
    /// Uformer.
    Uformer(Uformer),
}

impl Backbone {
    /// `R(x)`: `(B, 3, H, W)` in `[0, 1]` -> residual `(B, 3, H, W)`. Sides must be multiples of
    /// [`Self::size_multiple`]. `train` switches BatchNorm to batch statistics (DnCNN).
    pub fn residual(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::DnCnn(n) => n.forward_t(xs, train),
            _ => Ok(self.residual_and_features(xs, train)?.0),
        }
    }

    /// `R(x)` and the network's bottleneck features, from one forward pass (for feature-space
    /// domain adaptation, e.g. a DANN domain classifier). `xs`: `(B, 3, H, W)` in `[0, 1]`,
    /// sides multiples of [`Self::size_multiple`]. The features are NCHW, `(B, C_f, H_f, W_f)`:
    ///
    /// | backbone | bottleneck | `C_f` | `H_f`, `W_f` |
    /// |---|---|---|---|
    /// | U-Net | output of the deepest `down_path` block | `width * 2^(depth-1)` | `/ 2^(depth-1)` |
    /// | DnCNN | input of `tail`, the last conv (no encoder) | `width` | `H`, `W` |
    /// | NAFNet | output of `middle_blks` | `width * 2^L` | `/ 2^L`, `L` = levels |
    /// | Restormer | output of the `latent` blocks | `8 * dim` | `/ 8` |
    /// | Uformer | output of the `conv` (bottleneck) level | `embed_dim * 2^L` | `/ 2^L` |
    ///
    /// [`Self::features_shape`] gives the shape without running the network.
    pub fn residual_and_features(&self, xs: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        match self {
            Self::UNet(n) => n.forward_with_features(xs),
            Self::DnCnn(n) => n.forward_with_features(xs, train),
            Self::NafNet(n) => n.forward_with_features(xs),
            Self::Restormer(n) => n.forward_with_features(xs),
            Self::Uformer(n) => n.forward_with_features(xs),
        }
    }

    /// `(C_f, H_f, W_f)` of [`Self::residual_and_features`]'s features for an `h x w` input
    /// (sides multiples of [`Self::size_multiple`]).
    pub fn features_shape(&self, h: usize, w: usize) -> (usize, usize, usize) {
        match self {
            Self::UNet(n) => {
                let c = n.config();
                let s = 1 << (c.depth - 1);
                (c.width * s, h / s, w / s)
            }
            Self::DnCnn(n) => (n.width(), h, w),
            Self::NafNet(n) => {
                let s = n.size_multiple();
                (n.width() * s, h / s, w / s)
            }
            Self::Restormer(n) => (8 * n.config().dim, h / 8, w / 8),
            Self::Uformer(n) => {
                let s = 1 << n.config().levels();
                (n.config().embed_dim * s, h / s, w / s)
            }
        }
    }

    /// Input sides must be multiples of this for [`Self::residual`].
    pub fn size_multiple(&self) -> usize {
        match self {
            Self::UNet(n) => n.config().size_multiple(),
            Self::DnCnn(_) => 1,
            Self::NafNet(n) => n.size_multiple(),
            Self::Restormer(n) => n.config().size_multiple(),
            Self::Uformer(n) => n.config().size_multiple(),
        }
    }

    /// `x + R(x)` for any input size: replicate-pads to a multiple of [`Self::size_multiple`],
    /// runs the network, and crops back. Not clamped.
    pub fn restore(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.restore_and_features(xs, train)?.0)
    }

    /// [`Self::restore`] and the bottleneck features of the padded input (see
    /// [`Self::residual_and_features`]; their sides are those of the padded input divided by
    /// the downsampling factor).
    pub fn restore_and_features(&self, xs: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let (_, _, h, w) = xs.dims4()?;
        let padded = pad_replicate_to_multiple(xs, self.size_multiple())?;
        let (res, feats) = self.residual_and_features(&padded, train)?;
        let res = res.narrow(2, 0, h)?.narrow(3, 0, w)?;
        Ok(((xs + res)?, feats))
    }
}
