//! Image I/O errors, dataset pairing, crop/augment consistency and seeded reproducibility.

use std::path::Path;

use daa_degrade::{
    load_image, random_crop, sample_rng, save_image, Degradation, Image, PairSource, PairedFolder,
    SmallImagePolicy, SyntheticPairs, UnpairedFolder,
};

fn gradient(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}

fn write_png(path: &Path, w: u32, h: u32) {
    gradient(w, h).save(path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn reads_8_and_16_bit_png_jpeg_gray_and_alpha() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    write_png(&d.join("rgb.png"), 9, 7);
    gradient(9, 7)
        .save(d.join("rgb.jpg"))
        .unwrap_or_else(|e| panic!("{e}"));
    let gray = image::GrayImage::from_fn(5, 4, |x, _| image::Luma([(x * 50) as u8]));
    gray.save(d.join("gray.png"))
        .unwrap_or_else(|e| panic!("{e}"));
    let rgba = image::RgbaImage::from_fn(5, 4, |_, _| image::Rgba([10, 20, 30, 0]));
    rgba.save(d.join("rgba.png"))
        .unwrap_or_else(|e| panic!("{e}"));
    let deep = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(3, 2, |x, _| {
        image::Rgb([x as u16 * 1000 + 1, 65535, 0])
    });
    deep.save(d.join("deep.png"))
        .unwrap_or_else(|e| panic!("{e}"));

    let img = load_image(d.join("rgb.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((img.width(), img.height()), (9, 7));
    assert!((img.get(0, 0, 3) - 21.0 / 255.0).abs() < 1e-6);
    let jpg = load_image(d.join("rgb.jpg")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((jpg.width(), jpg.height()), (9, 7));
    let g = load_image(d.join("gray.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.get(0, 0, 2), g.get(2, 0, 2), "gray is replicated to RGB");
    assert!((g.get(1, 0, 2) - 100.0 / 255.0).abs() < 1e-6);
    let a = load_image(d.join("rgba.png")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (a.get(2, 1, 1) - 30.0 / 255.0).abs() < 1e-6,
        "alpha is dropped, colour kept"
    );
    let deep = load_image(d.join("deep.png")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (deep.get(0, 0, 1) - 1001.0 / 65535.0).abs() < 1e-6,
        "16-bit precision is kept"
    );
}

#[test]
fn bad_files_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    std::fs::write(d.join("empty.png"), b"").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("text.png"), b"this is not an image at all")
        .unwrap_or_else(|e| panic!("{e}"));
    write_png(&d.join("full.png"), 40, 40);
    let bytes = std::fs::read(d.join("full.png")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("truncated.png"), &bytes[..bytes.len() / 2])
        .unwrap_or_else(|e| panic!("{e}"));
    for name in ["empty.png", "text.png", "truncated.png", "missing.png"] {
        let err = load_image(d.join(name))
            .err()
            .unwrap_or_else(|| panic!("{name} should fail"));
        assert!(err.to_string().contains(name), "{err}");
    }
    assert!(load_image(d).is_err(), "a directory is not an image");
}

#[test]
fn save_rounds_and_clamps() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("o.png");
    let img = Image::from_planar(2, 1, vec![-0.5, 1.5, 0.5, 0.2, 0.0, 1.0])
        .unwrap_or_else(|e| panic!("{e}"));
    save_image(&p, &img).unwrap_or_else(|e| panic!("{e}"));
    let back = load_image(&p).unwrap_or_else(|e| panic!("{e}"));
    let want = [0.0, 1.0, 128.0 / 255.0, 51.0 / 255.0, 0.0, 1.0];
    for (a, b) in back.data().iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{:?}", back.data());
    }
    assert!(save_image(dir.path().join("o.xyz"), &img).is_err());
}

#[test]
fn pairing_errors_list_the_unpaired_names() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (i, t) = (dir.path().join("in"), dir.path().join("gt"));
    std::fs::create_dir_all(&i).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&t).unwrap_or_else(|e| panic!("{e}"));
    for n in ["a", "b", "only_input"] {
        write_png(&i.join(format!("{n}.png")), 16, 16);
    }
    for n in ["a", "b", "only_target"] {
        write_png(&t.join(format!("{n}.png")), 16, 16);
    }
    let err = PairedFolder::open(&i, &t, true, SmallImagePolicy::ReflectPad, false)
        .err()
        .map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(
        err.contains("only_input") && err.contains("only_target"),
        "{err}"
    );

    std::fs::remove_file(i.join("only_input.png")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(t.join("only_target.png")).unwrap_or_else(|e| panic!("{e}"));
    write_png(&t.join("b.png"), 16, 12);
    let err = PairedFolder::open(&i, &t, true, SmallImagePolicy::ReflectPad, false)
        .err()
        .map(|e| e.to_string());
    assert!(err.unwrap_or_default().contains("\"b\" differs in size"));

    write_png(&t.join("b.png"), 16, 16);
    let ds = PairedFolder::open(&i, &t, true, SmallImagePolicy::ReflectPad, false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.names().collect::<Vec<_>>(), vec!["a", "b"]);

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    assert!(UnpairedFolder::open(&empty, false, SmallImagePolicy::Error, false).is_err());
    assert!(UnpairedFolder::open(
        dir.path().join("nope"),
        false,
        SmallImagePolicy::Error,
        false
    )
    .is_err());
}

#[test]
fn a_corrupt_file_is_found_when_the_dataset_opens() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_png(&dir.path().join("good.png"), 16, 16);
    std::fs::write(dir.path().join("bad.png"), b"\x89PNG garbage")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = UnpairedFolder::open(dir.path(), false, SmallImagePolicy::Error, false)
        .err()
        .map(|e| e.to_string());
    assert!(err.unwrap_or_default().contains("bad.png"));
}

#[test]
fn pairs_get_the_same_crop_and_flip() {
    // Target = input + 0.25 everywhere: any misalignment between the two crops breaks it.
    let w = 37;
    let h = 29;
    let base: Vec<f32> = (0..3 * w * h)
        .map(|i| ((i * 7919) % 1000) as f32 / 2000.0)
        .collect();
    let input = Image::from_planar(w, h, base.clone()).unwrap_or_else(|e| panic!("{e}"));
    let target = Image::from_planar(w, h, base.iter().map(|v| v + 0.25).collect())
        .unwrap_or_else(|e| panic!("{e}"));
    for seed in 0..20 {
        let mut rng = sample_rng(seed, 0, 0);
        let out = random_crop(
            &[&input, &target],
            16,
            true,
            SmallImagePolicy::Error,
            &mut rng,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for (a, b) in out[0].data().iter().zip(out[1].data()) {
            assert!((b - a - 0.25).abs() < 1e-6);
        }
    }
}

#[test]
fn a_seed_reproduces_samples_and_different_indices_differ() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_png(&dir.path().join("a.png"), 48, 40);
    let clean = UnpairedFolder::open(dir.path(), true, SmallImagePolicy::ReflectPad, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let ds =
        SyntheticPairs::new(clean, Degradation::denoise_source()).unwrap_or_else(|e| panic!("{e}"));
    let a = ds
        .patch(0, 16, &mut sample_rng(5, 1, 2))
        .unwrap_or_else(|e| panic!("{e}"));
    let b = ds
        .patch(0, 16, &mut sample_rng(5, 1, 2))
        .unwrap_or_else(|e| panic!("{e}"));
    let c = ds
        .patch(0, 16, &mut sample_rng(5, 1, 3))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

#[test]
fn images_smaller_than_the_patch_are_padded_or_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_png(&dir.path().join("small.png"), 10, 6);
    let pad = UnpairedFolder::open(dir.path(), true, SmallImagePolicy::ReflectPad, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let p = pad
        .patch(0, 16, &mut sample_rng(0, 0, 0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((p.width(), p.height()), (16, 16));
    let strict = UnpairedFolder::open(dir.path(), true, SmallImagePolicy::Error, false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(strict.patch(0, 16, &mut sample_rng(0, 0, 0)).is_err());
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Fixtures from scripts/make_io_fixtures.py.
#[test]
fn palette_exif_16_bit_gray_tiny_and_huge_images() {
    let pal = load_image(fixture("palette.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((pal.width(), pal.height()), (6, 4));
    // Pixel 0 is palette entry 0 (red); the transparent entry 1 keeps its colour (green).
    assert_eq!((pal.get(0, 0, 0), pal.get(1, 0, 0)), (1.0, 0.0));
    assert_eq!((pal.get(0, 0, 1), pal.get(1, 0, 1)), (0.0, 1.0));

    // Orientation 6: the stored 6x4 image (left half red, right half blue) is shown rotated 90
    // degrees clockwise: 4x6, red on top, blue at the bottom.
    let rot = load_image(fixture("exif_rot90.jpg")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((rot.width(), rot.height()), (4, 6));
    assert!(
        rot.get(0, 0, 1) > 0.8 && rot.get(2, 0, 1) < 0.2,
        "top is red"
    );
    assert!(
        rot.get(2, 5, 1) > 0.8 && rot.get(0, 5, 1) < 0.2,
        "bottom is blue"
    );

    let g16 = load_image(fixture("gray16.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((g16.width(), g16.height()), (5, 3));
    assert!((g16.get(0, 0, 1) - 4681.0 / 65535.0).abs() < 1e-6);
    assert_eq!(g16.get(0, 0, 1), g16.get(2, 0, 1));

    let one = load_image(fixture("one_pixel.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((one.width(), one.height()), (1, 1));

    let err = load_image(fixture("huge_header.png"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("huge_header.png") && err.contains("larger than the limit"),
        "{err}"
    );
}
