//! Every degradation's output for a fixed image and seed, pinned bit for bit.
//!
//! The hashes were recorded before `blur_rain.rs` was split into `blur.rs` and `rain.rs` and the
//! shared helpers moved out (issue 13), so they prove that restructuring changed no output. They
//! pin the arithmetic order of each degradation and of the RNG draws; a change that moves one
//! draw or reorders one sum changes them. They also depend on the platform's `powf`/`exp`, so a
//! different libm may change the last bits of the sRGB-based ones (`camera`, `shake`): after an
//! intended change, run this test and copy the new values from its failure message.

use daa_degrade::{
    sample_rng, AwgnParams, CameraParams, CorrelatedNoiseParams, Degradation, Image,
    MotionBlurParams, RainParams, ShakeParams, StormParams,
};

/// An odd-sized photo-like test image: smooth gradients, a texture, a bright patch.
fn photo() -> Image {
    let (w, h) = (37, 29);
    let mut data = Vec::with_capacity(3 * w * h);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let grad = (x as f32 / w as f32) * 0.5 + (y as f32 / h as f32) * 0.3;
                let tex = (((x * 7 + y * 13 + c * 5) % 11) as f32) / 55.0;
                let bright = if (10..16).contains(&x) && (8..12).contains(&y) {
                    0.5
                } else {
                    0.0
                };
                data.push((grad + tex + bright + 0.05 * c as f32).min(1.0));
            }
        }
    }
    Image::from_planar(w, h, data).unwrap_or_else(|e| panic!("{e}"))
}

/// FNV-1a over the bit patterns of the samples and the image size.
fn hash(img: &Image) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let size = [img.width() as u32, img.height() as u32];
    for bits in size
        .into_iter()
        .chain(img.data().iter().map(|v| v.to_bits()))
    {
        for byte in bits.to_le_bytes() {
            h ^= byte as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[test]
fn each_degradation_reproduces_its_recorded_output() {
    let img = photo();
    let cases: [(Degradation, u64); 7] = [
        (
            Degradation::Awgn(AwgnParams::paper()),
            0xb5d9_1177_c2ed_530f,
        ),
        (
            Degradation::CorrelatedNoise(CorrelatedNoiseParams::camera_proxy()),
            0x78dd_e5a0_e403_596e,
        ),
        (
            Degradation::Camera(CameraParams::camera()),
            0x009e_ef3e_ac8a_b51b,
        ),
        (
            Degradation::MotionBlur(MotionBlurParams::source()),
            0x0a43_2919_93f3_6c42,
        ),
        (
            Degradation::Shake(ShakeParams::target()),
            0xc564_75b6_de26_96a4,
        ),
        (
            Degradation::Rain(RainParams::source()),
            0x7f88_cbb5_85d6_dd6b,
        ),
        (
            Degradation::Storm(StormParams::target()),
            0x1098_862d_fd60_3ac9,
        ),
    ];
    let mut failures = Vec::new();
    for (deg, expected) in &cases {
        deg.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", deg.name()));
        // One value per degradation: the hashes of two seeds' outputs folded together.
        let mut got = 0u64;
        for seed in [3u64, 11] {
            let out = deg
                .apply(&img, &mut sample_rng(seed, 1, 2))
                .unwrap_or_else(|e| panic!("{}: {e}", deg.name()));
            assert_ne!(out, img, "{} changed nothing", deg.name());
            got = got.rotate_left(17) ^ hash(&out);
        }
        if got != *expected {
            failures.push(format!("{}: 0x{got:016x}", deg.name()));
        }
    }
    assert!(failures.is_empty(), "changed outputs: {failures:?}");
}
