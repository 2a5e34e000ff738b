//! The data of a run: opening (and so checking) every dataset before training, the synthetic
//! target domain, the batch of each step, and the producer thread that prepares batches
//! ahead of the optimizer.

use std::path::Path;
use std::sync::mpsc;

use candle_core::{Device, Tensor};
use daa_degrade::{
    collate, sample_rng, save_image, Image, PairSource, PairedFolder, SmallImagePolicy,
    SyntheticPairs, UnpairedFolder,
};
use rand::seq::SliceRandom;

use crate::seeds::{salted, Salt};
use crate::step::Batch;
use crate::{DataSpec, Error, Result, TargetSpec, TrainConfig};

/// How image folders are opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenOptions {
    /// Random flips/rotations of crops.
    pub augment: bool,
    /// Images smaller than a crop: reflect-pad or refuse.
    pub small_images: SmallImagePolicy,
    /// Keep decoded images in memory.
    pub cache_images: bool,
}

impl OpenOptions {
    /// Held-out data: no augmentation, no cache, small images padded.
    pub fn eval() -> Self {
        Self {
            augment: false,
            small_images: SmallImagePolicy::ReflectPad,
            cache_images: false,
        }
    }

    /// The training options of `cfg`.
    pub fn train(cfg: &TrainConfig) -> Self {
        Self {
            augment: cfg.augment,
            small_images: cfg.small_images,
            cache_images: cfg.cache_images,
        }
    }
}

/// Opens a [`DataSpec`] as a pair source. Every file is checked here, before any work.
pub fn open_pairs(spec: &DataSpec, opts: OpenOptions) -> Result<Box<dyn PairSource>> {
    Ok(match spec {
        DataSpec::Synthetic {
            clean_dir,
            degradation,
        } => {
            let clean = open_folder(clean_dir, opts)?;
            Box::new(SyntheticPairs::new(clean, degradation.clone())?)
        }
        DataSpec::Paired {
            input_dir,
            target_dir,
        } => Box::new(PairedFolder::open(
            input_dir,
            target_dir,
            opts.augment,
            opts.small_images,
            opts.cache_images,
        )?),
    })
}

fn open_folder(dir: &Path, opts: OpenOptions) -> Result<UnpairedFolder> {
    Ok(UnpairedFolder::open(
        dir,
        opts.augment,
        opts.small_images,
        opts.cache_images,
    )?)
}

/// Opens the held-out set of `cfg` and checks that SSIM's 11x11 window fits every image
/// after the crop border: said now, not at the first evaluation.
pub fn open_eval(cfg: &TrainConfig) -> Result<Box<dyn PairSource>> {
    let data = open_pairs(&cfg.eval.data, OpenOptions::train(cfg).without_augment())?;
    if let Some((w, h)) = data.smallest_size()? {
        let border = cfg.eval.metric.crop_border;
        let min = 11 + 2 * border;
        if w < min || h < min {
            return Err(Error::Dataset(format!(
                "held-out images must be at least {min}x{min} pixels (SSIM's 11x11 window after \
                 a crop border of {border}); the smallest is {w}x{h}"
            )));
        }
    }
    Ok(data)
}

impl OpenOptions {
    fn without_augment(self) -> Self {
        Self {
            augment: false,
            ..self
        }
    }
}

/// The order in which epoch `epoch` visits the `n` images: a seeded permutation.
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut sample_rng(salted(seed, Salt::Order), epoch, u64::MAX));
    order
}

/// One stream of samples over `n` images: global sample `g` is image `order(epoch)[g % n]`
/// of epoch `g / n`. Remembers the current epoch's order.
struct Stream {
    seed: u64,
    n: usize,
    order: Option<(u64, Vec<usize>)>,
}

impl Stream {
    fn new(seed: u64, n: usize) -> Self {
        Self {
            seed,
            n,
            order: None,
        }
    }

    /// `(epoch, image index)` of global sample `g`.
    fn pick(&mut self, g: u64) -> (u64, usize) {
        let epoch = g / self.n as u64;
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.order = Some((epoch, epoch_order(self.seed, epoch, self.n)));
        }
        let idx = self
            .order
            .as_ref()
            .map(|(_, o)| o[(g % self.n as u64) as usize])
            .unwrap_or(0);
        (epoch, idx)
    }
}

/// The training data of a run, opened (and so checked) before training.
pub struct TrainData {
    source: Box<dyn PairSource>,
    target: Option<UnpairedFolder>,
    ex_clean: Option<UnpairedFolder>,
    seed: u64,
    batch_size: usize,
    patch_size: usize,
    opts: OpenOptions,
}

impl TrainData {
    /// Opens the source pairs, the target-domain folder (adaptation) and the unpaired clean
    /// images (`da-ex`). A synthetic target domain's clean photos are checked here and its
    /// images written by [`Self::materialize_target`].
    pub fn open(cfg: &TrainConfig) -> Result<Self> {
        let opts = OpenOptions::train(cfg);
        let source = open_pairs(&cfg.train_data, opts)?;
        let adapt = cfg.method.adapts();
        let target = match (&cfg.adaptation.target, adapt) {
            (TargetSpec::Folder { dir }, true) => Some(open_folder(dir, opts)?),
            (TargetSpec::Synthetic { clean_dir, .. }, true) => {
                UnpairedFolder::open(clean_dir, false, cfg.small_images, false)?;
                None
            }
            _ => None,
        };
        let ex_clean = match cfg.method.noises_unpaired_clean() {
            true => Some(open_folder(&cfg.adaptation.ex_clean_dir, opts)?),
            false => None,
        };
        Ok(Self {
            source,
            target,
            ex_clean,
            seed: cfg.seed,
            batch_size: cfg.batch_size,
            patch_size: cfg.patch_size,
            opts,
        })
    }

    /// For a synthetic target domain (with adaptation): degrades every clean photo
    /// `variants` times into `dir/input` (and keeps the clean copies in `dir/gt`, which
    /// training never reads), then opens `dir/input` as the target domain. Writing is skipped
    /// when `dir/input` is already complete, as on resume; its content is a pure function of
    /// the seed anyway.
    pub fn materialize_target(&mut self, cfg: &TrainConfig, dir: &Path) -> Result<()> {
        let TargetSpec::Synthetic {
            clean_dir,
            degradation,
            variants,
        } = &cfg.adaptation.target
        else {
            return Ok(());
        };
        if !cfg.method.adapts() {
            return Ok(());
        }
        let input = dir.join("input");
        let gt = dir.join("gt");
        let clean = UnpairedFolder::open(clean_dir, false, cfg.small_images, false)?;
        let expected = clean.len() * variants;
        let done = std::fs::read_dir(&input).map(|d| d.count()).unwrap_or(0);
        if done != expected {
            write_target(&clean, degradation, *variants, &input, &gt, self.seed)?;
        }
        self.target = Some(open_folder(&input, self.opts)?);
        Ok(())
    }

    /// Batch `step` on the CPU. A pure function of (config, step): sample `k` of step `s` is
    /// global sample `g = s * B + k` of each stream; the source stream visits image
    /// `order(epoch)[g % N]` with RNG `sample_rng(seed, epoch, g)`, and the target and Ex
    /// streams do the same with their own salts (independent crops). Resuming at any step
    /// reproduces them.
    pub fn batch(&self, step: usize) -> Result<Batch> {
        let p = self.patch_size;
        let (mut xs, mut ys, mut xr, mut ex) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut source = Stream::new(self.seed, self.source.len());
        let target_seed = salted(self.seed, Salt::Target);
        let ex_seed = salted(self.seed, Salt::Ex);
        let mut target = self
            .target
            .as_ref()
            .map(|t| Stream::new(target_seed, t.len()));
        let mut ex_stream = self
            .ex_clean
            .as_ref()
            .map(|e| Stream::new(ex_seed, e.len()));
        for k in 0..self.batch_size {
            let g = (step * self.batch_size + k) as u64;
            let (epoch, idx) = source.pick(g);
            let (x, y) = self
                .source
                .patch(idx, p, &mut sample_rng(self.seed, epoch, g))?;
            xs.push(x);
            ys.push(y);
            if let (Some(t), Some(s)) = (&self.target, &mut target) {
                let (epoch, idx) = s.pick(g);
                xr.push(t.patch(idx, p, &mut sample_rng(target_seed, epoch, g))?);
            }
            if let (Some(e), Some(s)) = (&self.ex_clean, &mut ex_stream) {
                let (epoch, idx) = s.pick(g);
                ex.push(e.patch(idx, p, &mut sample_rng(ex_seed, epoch, g))?);
            }
        }
        Ok(Batch {
            source_input: collate(&xs)?,
            source_target: collate(&ys)?,
            target_input: collate_some(xr)?,
            ex_clean: collate_some(ex)?,
        })
    }
}

fn collate_some(images: Vec<Image>) -> Result<Option<Tensor>> {
    match images.is_empty() {
        true => Ok(None),
        false => Ok(Some(collate(&images)?)),
    }
}

fn write_target(
    clean: &UnpairedFolder,
    degradation: &daa_degrade::Degradation,
    variants: usize,
    input: &Path,
    gt: &Path,
    seed: u64,
) -> Result<()> {
    for d in [input, gt] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    for i in 0..clean.len() {
        let (img, name) = clean.image(i)?;
        for v in 0..variants {
            let mut rng = sample_rng(salted(seed, Salt::Materialize), v as u64, i as u64);
            let degraded = degradation.apply(&img, &mut rng)?;
            save_image(input.join(format!("{name}_{v}.png")), &degraded)?;
            save_image(gt.join(format!("{name}_{v}.png")), &img)?;
        }
    }
    Ok(())
}

/// Moves a batch to `device`.
pub fn to_device(b: Batch, device: &Device) -> Result<Batch> {
    let mv = |t: Option<Tensor>| -> Result<Option<Tensor>> {
        Ok(match t {
            Some(t) => Some(t.to_device(device)?),
            None => None,
        })
    };
    Ok(Batch {
        source_input: b.source_input.to_device(device)?,
        source_target: b.source_target.to_device(device)?,
        target_input: mv(b.target_input)?,
        ex_clean: mv(b.ex_clean)?,
    })
}

/// Starts a thread in `scope` that prepares the batches of `steps` in order, a few ahead of
/// the consumer. It stops when the receiver is dropped.
pub(crate) fn spawn_producer<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    data: &'scope TrainData,
    steps: std::ops::Range<usize>,
) -> Batches {
    let (tx, rx) = mpsc::sync_channel::<Result<Batch>>(4);
    scope.spawn(move || {
        for step in steps {
            if tx.send(data.batch(step)).is_err() {
                break;
            }
        }
    });
    Batches { rx }
}

/// The receiving end of [`spawn_producer`].
pub(crate) struct Batches {
    rx: mpsc::Receiver<Result<Batch>>,
}

impl Batches {
    /// The next batch, moved to `device`.
    pub(crate) fn next(&self, device: &Device) -> Result<Batch> {
        let batch = self.rx.recv().map_err(|_| Error::ProducerStopped)??;
        to_device(batch, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_permutations_that_change_per_epoch() {
        let a = epoch_order(1, 0, 10);
        let b = epoch_order(1, 1, 10);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(1, 0, 10));
    }
}
