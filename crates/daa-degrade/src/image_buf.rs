use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// A planar RGB image, `f32` values nominally in `[0, 1]` (degradations may leave the range;
/// saving clamps). Layout: `data[c * h * w + y * w + x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Image {
    /// Wraps planar RGB data; errors when the length is not `3 * width * height` or a side is 0.
    pub fn from_planar(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::Param(format!("image of size {width}x{height}")));
        }
        if data.len() != 3 * width * height {
            return Err(Error::Param(format!(
                "planar data of length {} for a {width}x{height} RGB image",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// An image of one colour.
    pub fn filled(width: usize, height: usize, rgb: [f32; 3]) -> Self {
        let n = width * height;
        let mut data = Vec::with_capacity(3 * n);
        for v in rgb {
            data.extend(std::iter::repeat_n(v, n));
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }
    /// The planar data.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// The planar data, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// One channel plane (0 = R, 1 = G, 2 = B).
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }
    /// Value at channel `c`, row `y`, column `x`.
    pub fn get(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Applies `f` to every value.
    pub fn map(mut self, f: impl Fn(f32) -> f32) -> Self {
        self.data.iter_mut().for_each(|v| *v = f(*v));
        self
    }

    /// A copy with every value clamped to `[0, 1]`.
    pub fn clamped(&self) -> Self {
        self.clone().map(|v| v.clamp(0.0, 1.0))
    }

    /// A `(1, 3, H, W)` f32 CPU tensor.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (1, 3, self.height, self.width),
            &Device::Cpu,
        )?)
    }

    /// Reads a `(3, H, W)` or `(1, 3, H, W)` tensor of any float dtype and device.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let t = match t.rank() {
            4 if t.dim(0)? == 1 => t.squeeze(0)?,
            3 => t.clone(),
            _ => {
                return Err(Error::Param(format!(
                    "expected a (1, 3, H, W) or (3, H, W) tensor, got {:?}",
                    t.shape()
                )))
            }
        };
        let (c, h, w) = t.dims3()?;
        if c != 3 {
            return Err(Error::Param(format!("expected 3 channels, got {c}")));
        }
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::from_planar(w, h, data)
    }

    /// The sub-image with top-left corner `(x, y)` and size `w x h` (must lie inside).
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Self {
        debug_assert!(
            x + w <= self.width && y + h <= self.height,
            "crop out of bounds"
        );
        let mut data = Vec::with_capacity(3 * w * h);
        for c in 0..3 {
            for row in y..y + h {
                let start = (c * self.height + row) * self.width + x;
                data.extend_from_slice(&self.data[start..start + w]);
            }
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }
}
