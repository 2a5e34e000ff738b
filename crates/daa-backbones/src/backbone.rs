use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::common::pad_replicate_to_multiple;
use crate::{DnCnn, DnCnnConfig, NafNet, NafNetConfig, UNet, UNetConfig};

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
}

impl BackboneConfig {
    /// Builds the network, creating or loading its weights through `vb`.
    pub fn build(&self, vb: VarBuilder) -> Result<Backbone> {
        Ok(match self {
            Self::UNet(c) => Backbone::UNet(UNet::new(vb, c)?),
            Self::DnCnn(c) => Backbone::DnCnn(DnCnn::new(vb, c)?),
            Self::NafNet(c) => Backbone::NafNet(NafNet::new(vb, c)?),
        })
    }

    /// Input sides must be multiples of this for [`Backbone::residual`].
    pub fn size_multiple(&self) -> usize {
        match self {
            Self::UNet(c) => c.size_multiple(),
            Self::DnCnn(_) => 1,
            Self::NafNet(c) => c.size_multiple(),
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::UNet(_) => "unet",
            Self::DnCnn(_) => "dncnn",
            Self::NafNet(_) => "nafnet",
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
}

impl Backbone {
    /// `R(x)`: `(B, 3, H, W)` in `[0, 1]` -> residual `(B, 3, H, W)`. Sides must be multiples of
    /// [`Self::size_multiple`]. `train` switches BatchNorm to batch statistics (DnCNN).
    pub fn residual(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::UNet(n) => n.forward(xs),
            Self::DnCnn(n) => n.forward_t(xs, train),
            Self::NafNet(n) => n.forward(xs),
        }
    }

    /// Input sides must be multiples of this for [`Self::residual`].
    pub fn size_multiple(&self) -> usize {
        match self {
            Self::UNet(n) => n.config().size_multiple(),
            Self::DnCnn(_) => 1,
            Self::NafNet(n) => n.size_multiple(),
        }
    }

    /// `x + R(x)` for any input size: replicate-pads to a multiple of [`Self::size_multiple`],
    /// runs the network, and crops back. Not clamped.
    pub fn restore(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let padded = pad_replicate_to_multiple(xs, self.size_multiple())?;
        let res = self.residual(&padded, train)?;
        let res = res.narrow(2, 0, h)?.narrow(3, 0, w)?;
        xs + res
    }
}
