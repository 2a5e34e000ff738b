//! Multi-head self-attention over spatial positions (the middle block's).

use candle_core::{Result, Tensor, D};
use candle_nn::{Module, VarBuilder};

use super::blocks::{group_norm, kaiming, GroupNorm};

/// GroupNorm -> qkv (1x1) -> attention with heads of `head_channels` -> proj_out (1x1) ->
/// residual. Tensor names: `norm`, `qkv`, `proj_out` (1x1 convs stored as `(out, in, 1)` like
/// PyTorch's `Conv1d`). The softmax is candle's generic `softmax`, which has a backward (the
/// fused `softmax_last_dim` does not).
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv_w: Tensor,
    qkv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
    heads: usize,
}

impl AttentionBlock {
    pub fn new(vb: VarBuilder, ch: usize, head_channels: usize, groups: usize) -> Result<Self> {
        if !ch.is_multiple_of(head_channels) {
            candle_core::bail!(
                "attention: {ch} channels do not split into heads of {head_channels}"
            );
        }
        let zero = candle_nn::Init::Const(0.0);
        Ok(Self {
            norm: group_norm(vb.pp("norm"), groups, ch)?,
            qkv_w: vb
                .pp("qkv")
                .get_with_hints((3 * ch, ch, 1), "weight", kaiming())?,
            qkv_b: vb.pp("qkv").get_with_hints(3 * ch, "bias", zero)?,
            proj_w: vb
                .pp("proj_out")
                .get_with_hints((ch, ch, 1), "weight", kaiming())?,
            proj_b: vb.pp("proj_out").get_with_hints(ch, "bias", zero)?,
            heads: ch / head_channels,
        })
    }

    /// `(B, C, H, W) -> (B, C, H, W)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let t = h * w;
        let flat = xs.reshape((b, c, t))?;
        let normed = self.norm.forward(&flat)?;
        // 1x1 conv as a matmul: (3C, C) @ (B, C, T) -> (B, 3C, T).
        let qkv = self
            .qkv_w
            .squeeze(2)?
            .broadcast_matmul(&normed)?
            .broadcast_add(&self.qkv_b.reshape((3 * c, 1))?)?;
        // Legacy head order: (B*heads, 3*ch, T), then q, k, v of ch channels each.
        let ch = c / self.heads;
        let qkv = qkv.reshape((b * self.heads, 3 * ch, t))?;
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let q = (qkv.narrow(1, 0, ch)? * scale)?;
        let k = (qkv.narrow(1, ch, ch)? * scale)?;
        let v = qkv.narrow(1, 2 * ch, ch)?;
        // weight[b, t, s] = sum_c q[b, c, t] k[b, c, s]; softmax over s.
        let weight = q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)?;
        let weight =
            candle_nn::ops::softmax(&weight.to_dtype(candle_core::DType::F32)?, D::Minus1)?
                .to_dtype(xs.dtype())?;
        // a[b, c, t] = sum_s weight[b, t, s] v[b, c, s].
        let a = v
            .contiguous()?
            .matmul(&weight.transpose(1, 2)?.contiguous()?)?;
        let a = a.reshape((b, c, t))?;
        let out = self
            .proj_w
            .squeeze(2)?
            .broadcast_matmul(&a)?
            .broadcast_add(&self.proj_b.reshape((c, 1))?)?;
        (flat + out)?.reshape((b, c, h, w))
    }
}
