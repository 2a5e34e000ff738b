//! PSNR/SSIM against scikit-image on committed fixtures. Regenerate with
//! `python3 scripts/make_metric_fixtures.py` (scikit-image 0.26.0): it crops a 64x48 patch of
//! datasets/photos/test/monarch.png, adds rounded Gaussian noise (numpy seed 0, sigma 20) or a
//! +9 shift, and records `peak_signal_noise_ratio(data_range=255)` and
//! `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//! data_range=255)` on RGB and on `rgb2ycbcr(...)[..., 0]`, with crop borders 0 and 4.

use std::path::PathBuf;

use daa_degrade::load_image;
use daa_train::metrics::{psnr, ssim, MetricConfig};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let text =
        std::fs::read_to_string(data("metrics_golden.json")).unwrap_or_else(|e| panic!("{e}"));
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 4);
    let reference = load_image(data("metric_ref.png")).unwrap_or_else(|e| panic!("{e}"));
    for case in cases {
        let img = load_image(data(case["image"].as_str().unwrap_or_default()))
            .unwrap_or_else(|e| panic!("{e}"));
        let border = case["crop_border"].as_u64().unwrap_or(99) as usize;
        for (y_channel, p_key, s_key) in
            [(false, "psnr_rgb", "ssim_rgb"), (true, "psnr_y", "ssim_y")]
        {
            let cfg = MetricConfig {
                crop_border: border,
                y_channel,
                quantize: true,
            };
            let p = psnr(&reference, &img, &cfg).unwrap_or_else(|e| panic!("{e}"));
            let s = ssim(&reference, &img, &cfg).unwrap_or_else(|e| panic!("{e}"));
            let (wp, ws) = (
                case[p_key].as_f64().unwrap_or(0.0),
                case[s_key].as_f64().unwrap_or(0.0),
            );
            assert!(
                (p - wp).abs() < 1e-6,
                "{p_key} border {border}: {p} vs {wp}"
            );
            assert!(
                (s - ws).abs() < 1e-6,
                "{s_key} border {border}: {s} vs {ws}"
            );
        }
    }
}

#[test]
fn identical_images_and_bad_inputs() {
    let a = load_image(data("metric_ref.png")).unwrap_or_else(|e| panic!("{e}"));
    let cfg = MetricConfig::rgb();
    assert_eq!(psnr(&a, &a, &cfg).unwrap_or(0.0), f64::INFINITY);
    assert!((ssim(&a, &a, &cfg).unwrap_or(0.0) - 1.0).abs() < 1e-12);
    let small = a.crop(0, 0, 10, 10);
    assert!(
        ssim(&small, &small, &cfg).is_err(),
        "ssim needs an 11x11 window"
    );
    assert!(psnr(&a, &small, &cfg).is_err(), "sizes must match");
    let huge_border = MetricConfig {
        crop_border: 40,
        ..cfg
    };
    assert!(psnr(&a, &a, &huge_border).is_err());
}

#[test]
fn quantisation_clamps_before_rounding() {
    // Values outside [0, 1] are clamped, so an output of 1.3 scores like 1.0, not like 0.3
    // (the reference's uint8 truncation without clamping wraps around).
    let white = daa_degrade::Image::filled(16, 16, [1.0; 3]);
    let over = daa_degrade::Image::filled(16, 16, [1.3; 3]);
    assert_eq!(
        psnr(&white, &over, &MetricConfig::rgb()).unwrap_or(0.0),
        f64::INFINITY
    );
    let raw = MetricConfig {
        quantize: false,
        ..MetricConfig::rgb()
    };
    assert!(psnr(&white, &over, &raw).unwrap_or(f64::INFINITY) < 20.0);
}
