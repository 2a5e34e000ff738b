//! The value range (`TrainConfig::range`, docs/method.md section 2, "Value range"): a run's
//! training step maps its `[0, 1]` batch into the range, the range is stored in every restorer
//! checkpoint, and restoring with a signed checkpoint maps the image into `[-1, 1]` and back,
//! while images stay `[0, 1]` at load, save and metrics.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use daa_backbones::{BackboneConfig, UNetConfig};
use daa_degrade::Image;
use daa_train::{
    charbonnier, load_restorer, restore_image, restorer_range, save_restorer, seeded_var_builder,
    train, Batch, Method, Models, TileConfig, TrainConfig, ValueRange, RANGE_KEY,
};

fn ok<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A 24x16 image with values spread over [0, 1].
fn test_image() -> Image {
    let (w, h) = (24, 16);
    let data: Vec<f32> = (0..3 * w * h)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    ok(Image::from_planar(w, h, data))
}

fn scalar(t: &Tensor) -> f64 {
    ok(ok(t.to_dtype(DType::F64)).to_scalar::<f64>())
}

/// `Models::train_step` maps the `[0, 1]` batch into the run's range before the restorer and
/// the Charbonnier loss: its `rec` is the loss of the mapped batch, computed here by hand with
/// the same initial weights (seeded, so a second `Models` holds them too).
#[test]
fn the_training_step_runs_in_the_configured_range() {
    let dev = Device::Cpu;
    let cfg = TrainConfig {
        method: Method::Vanilla,
        range: ValueRange::Signed,
        ..TrainConfig::smoke()
    };
    let u = |seed: u64| -> Tensor {
        let v: Vec<f32> = (0..2 * 3 * 32 * 32)
            .map(|i| ((i as u64 * 7919 + seed) % 1000) as f32 / 999.0)
            .collect();
        ok(Tensor::from_vec(v, (2, 3, 32, 32), &dev))
    };
    let batch = Batch {
        source_input: u(1),
        source_target: u(2),
        target_input: None,
        ex_clean: None,
    };
    let reference = ok(Models::new(&cfg, &dev));
    let mut models = ok(Models::new(&cfg, &dev));
    assert_eq!(models.range(), ValueRange::Signed);
    let rec_in = |range: ValueRange| -> f64 {
        let b = ok(batch.from_unit(range));
        let r = ok(reference.restorer.residual(&b.source_input, true));
        let restored = ok(&b.source_input + &r);
        scalar(&ok(charbonnier(
            &restored,
            &b.source_target,
            cfg.charbonnier_eps,
        )))
    };
    let outcome = ok(models.train_step(&batch, 0, cfg.seed));
    let rec = outcome
        .losses
        .iter()
        .find(|(n, _)| *n == "rec")
        .map(|(_, v)| *v)
        .unwrap_or(f64::NAN);
    let (signed, unit) = (rec_in(ValueRange::Signed), rec_in(ValueRange::Unit));
    assert!(
        (rec - signed).abs() <= 1e-6 * signed.abs(),
        "rec {rec} vs the signed batch's {signed}"
    );
    assert!(
        (rec - unit).abs() > 1e-3 * unit.abs(),
        "rec {rec} equals the unit batch's {unit}: the range was not applied"
    );
}

/// A restorer saved with `signed` says so in its metadata, and restoring with it maps the
/// image into `[-1, 1]` and the output back: `clamp((R'(2x - 1) + 1) / 2)` with
/// `R'(z) = z + R(z)`. The same weights read as `unit` restore differently.
#[test]
fn a_signed_checkpoint_maps_in_and_out() {
    let dev = Device::Cpu;
    let dir = ok(tempfile::tempdir());
    let cfg = BackboneConfig::UNet(UNetConfig::tiny());
    let varmap = VarMap::new();
    ok(cfg.build(seeded_var_builder(&varmap, 7, DType::F32, &dev)));
    let path = dir.path().join("signed.safetensors");
    ok(save_restorer(&path, &varmap, &cfg, ValueRange::Signed));
    assert_eq!(ok(restorer_range(&path)), ValueRange::Signed);

    let (_, net, _) = ok(load_restorer(&path, &dev, None));
    let img = test_image();
    let tiles = TileConfig {
        tile: 0,
        ..TileConfig::default()
    };
    let signed = ok(restore_image(&net, &img, &dev, tiles, ValueRange::Signed));
    let xs = ok(ok(img.to_tensor()).affine(2.0, -1.0));
    let by_hand = ok(ok(ok(net.restore(&xs, false)).affine(0.5, 0.5)).clamp(0f32, 1f32));
    let by_hand = ok(Image::from_tensor(&by_hand));
    let max_diff = signed
        .data()
        .iter()
        .zip(by_hand.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-6, "signed restore off by {max_diff}");
    assert!(signed.data().iter().all(|v| (0.0..=1.0).contains(v)));
    let unit = ok(restore_image(&net, &img, &dev, tiles, ValueRange::Unit));
    let unit_diff = signed
        .data()
        .iter()
        .zip(unit.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        unit_diff > 1e-3,
        "unit and signed restore alike ({unit_diff})"
    );
}

/// A checkpoint without `daa.range` (older daa, or converted from another tool) is `unit`;
/// an unknown value is an error that names it.
#[test]
fn checkpoints_without_a_range_are_unit_and_bad_ranges_are_named() {
    let dir = ok(tempfile::tempdir());
    let write = |name: &str, meta: Option<HashMap<String, String>>| -> std::path::PathBuf {
        let path = dir.path().join(name);
        let t = ok(Tensor::zeros(2, DType::F32, &Device::Cpu));
        ok(safetensors::serialize_to_file([("w", &t)], meta, &path));
        path
    };
    let none = write("old.safetensors", None);
    assert_eq!(ok(restorer_range(&none)), ValueRange::Unit);
    let meta = HashMap::from([(RANGE_KEY.to_string(), "both".to_string())]);
    let bad = write("bad.safetensors", Some(meta));
    let err = restorer_range(&bad).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("\"both\"")),
        "{err:?}"
    );
}

/// A signed run stores its range with every restorer it writes, and its final evaluation is
/// what evaluating the saved checkpoint in that range gives.
#[test]
fn a_signed_run_records_its_range_in_its_checkpoints() {
    let dir = ok(tempfile::tempdir());
    let run = dir.path().join("run");
    let cfg = TrainConfig {
        range: ValueRange::Signed,
        steps: 2,
        ..TrainConfig::smoke()
    };
    let summary = ok(train(&cfg, &run, &Device::Cpu, false, &mut |_| {}));
    for name in ["restorer-2.safetensors", "restorer-best.safetensors"] {
        assert_eq!(
            ok(restorer_range(&run.join(name))),
            ValueRange::Signed,
            "{name}"
        );
    }
    let (_, net, _) = ok(load_restorer(&summary.checkpoint, &Device::Cpu, None));
    let data = ok(daa_train::open_eval(&cfg));
    let eval = |range| {
        ok(daa_train::evaluate(
            &net,
            range,
            data.as_ref(),
            &cfg.eval.metric,
            cfg.eval.seed,
            &Device::Cpu,
            TileConfig::default(),
            None::<&Path>,
        ))
    };
    let signed = eval(ValueRange::Signed);
    assert_eq!(signed.mean_restored, summary.final_eval.mean_restored);
    assert_ne!(
        eval(ValueRange::Unit).mean_restored,
        summary.final_eval.mean_restored
    );
}
