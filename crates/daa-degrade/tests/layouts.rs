//! The paper's dataset layouts, on miniature copies built in temporary folders.

use std::path::{Path, PathBuf};

use daa_degrade::{save_image, Image, Layout, PairImage, PairedFolder, SmallImagePolicy, Split};

type R = Result<(), Box<dyn std::error::Error>>;

fn put(root: &Path, rel: &str, value: f32) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    save_image(&p, &Image::filled(8, 6, [value; 3]))?;
    Ok(p)
}

fn file(side: &PairImage) -> Option<&Path> {
    match side {
        PairImage::File(p) => Some(p),
        PairImage::Memory(_) => None,
    }
}

#[test]
fn gopro_pairs_blur_with_sharp_per_sequence() -> R {
    let t = tempfile::tempdir()?;
    for seq in ["GOPR0372_07_00", "GOPR0384_11_01"] {
        for n in ["000047", "000048"] {
            put(t.path(), &format!("test/{seq}/blur/{n}.png"), 0.2)?;
            put(t.path(), &format!("test/{seq}/sharp/{n}.png"), 0.8)?;
        }
    }
    put(t.path(), "train/GOPR0001_00_00/blur/000001.png", 0.2)?;
    put(t.path(), "train/GOPR0001_00_00/sharp/000001.png", 0.8)?;
    let test = Layout::GoPro.pairs(t.path(), Split::Test)?;
    assert_eq!(test.len(), 4);
    assert_eq!(test[0].name, "GOPR0372_07_00_000047");
    assert!(file(&test[0].input).is_some_and(|p| p.ends_with("blur/000047.png")));
    assert!(file(&test[0].target).is_some_and(|p| p.ends_with("sharp/000047.png")));
    assert_eq!(Layout::GoPro.pairs(t.path(), Split::Train)?.len(), 1);
    // A blurred frame without its sharp partner is an error naming it.
    put(t.path(), "test/GOPR0384_11_01/blur/000049.png", 0.2)?;
    let err = Layout::GoPro
        .pairs(t.path(), Split::Test)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("000049")));
    Ok(())
}

#[test]
fn realblur_and_spa_lists_find_the_ground_truth_column() -> R {
    let t = tempfile::tempdir()?;
    let base = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene001";
    put(t.path(), &format!("{base}/gt/gt_1.png"), 0.8)?;
    put(t.path(), &format!("{base}/blur/blur_1.png"), 0.2)?;
    std::fs::write(
        t.path().join("RealBlur_J_test_list.txt"),
        format!("{base}/gt/gt_1.png {base}/blur/blur_1.png\n\n"),
    )?;
    let pairs = Layout::RealBlurJ.pairs(t.path(), Split::Test)?;
    assert_eq!(pairs.len(), 1);
    assert!(file(&pairs[0].target).is_some_and(|p| p.ends_with("gt/gt_1.png")));
    assert!(file(&pairs[0].input).is_some_and(|p| p.ends_with("blur/blur_1.png")));
    // No train list: a clear error naming the file.
    let err = Layout::RealBlurJ
        .pairs(t.path(), Split::Train)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("RealBlur_J_train_list.txt")));

    // SPA: rainy first, clean second; the "gt" folder decides even when listed first.
    put(t.path(), "real_world/000/000-0/000-0_1.png", 0.9)?;
    put(t.path(), "real_world_gt/000/000-0.png", 0.5)?;
    put(t.path(), "real_test_1000/rain/001.png", 0.9)?;
    put(t.path(), "real_test_1000/gt/001.png", 0.5)?;
    std::fs::write(
        t.path().join("real_world.txt"),
        "/real_world/000/000-0/000-0_1.png /real_world_gt/000/000-0.png\n",
    )?;
    std::fs::write(
        t.path().join("real_test_1000.txt"),
        "real_test_1000/gt/001.png real_test_1000/rain/001.png\n",
    )?;
    let train = Layout::Spa.pairs(t.path(), Split::Train)?;
    assert!(file(&train[0].target).is_some_and(|p| p.ends_with("real_world_gt/000/000-0.png")));
    let test = Layout::Spa.pairs(t.path(), Split::Test)?;
    assert!(file(&test[0].input).is_some_and(|p| p.ends_with("rain/001.png")));
    // A line that is not two paths is refused with its number.
    std::fs::write(t.path().join("real_test_1000.txt"), "one_path_only.png\n")?;
    let err = Layout::Spa
        .pairs(t.path(), Split::Test)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("line 1")));
    Ok(())
}

#[test]
fn sidd_medium_and_rain13k_pair_by_name() -> R {
    let t = tempfile::tempdir()?;
    let scene = "Data/0001_001_S6_00100_00060_3200_L";
    put(t.path(), &format!("{scene}/0001_NOISY_SRGB_010.PNG"), 0.3)?;
    put(t.path(), &format!("{scene}/0001_GT_SRGB_010.PNG"), 0.4)?;
    put(t.path(), &format!("{scene}/0001_NOISY_SRGB_011.PNG"), 0.3)?;
    put(t.path(), &format!("{scene}/0001_GT_SRGB_011.PNG"), 0.4)?;
    let pairs = Layout::SiddMedium.pairs(t.path(), Split::Train)?;
    assert_eq!(pairs.len(), 2);
    assert!(file(&pairs[1].target).is_some_and(|p| p.ends_with("0001_GT_SRGB_011.PNG")));
    assert!(Layout::SiddMedium.pairs(t.path(), Split::Test).is_err());

    let r = tempfile::tempdir()?;
    put(r.path(), "input/1.png", 0.9)?;
    put(r.path(), "target/1.png", 0.5)?;
    let pairs = Layout::Rain13k.pairs(r.path(), Split::Train)?;
    let folder = PairedFolder::from_pairs(r.path(), pairs, false, SmallImagePolicy::Error, false)?;
    let (input, target, name) = folder.pair(0)?;
    assert_eq!(name, "1");
    assert!((input.get(0, 0, 0) - 0.9).abs() < 0.01);
    assert!((target.get(0, 0, 0) - 0.5).abs() < 0.01);
    assert!("nope".parse::<Layout>().is_err());
    assert_eq!("realblur-j".parse::<Layout>()?, Layout::RealBlurJ);
    Ok(())
}

#[test]
fn sidd_validation_blocks_are_read_from_the_mat_files() -> R {
    // Fixture from scripts/make_sidd_fixture.py: shape (2, 3, 16, 12, 3), values encode indices.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sidd_val");
    let pairs = Layout::SiddVal.pairs(&root, Split::Test)?;
    assert_eq!(pairs.len(), 6);
    let folder = PairedFolder::from_pairs(&root, pairs, false, SmallImagePolicy::Error, false)?;
    let names: Vec<&str> = folder.names().collect();
    assert_eq!(names[5], "01_02");
    let (noisy, gt, _) = folder.pair(5)?; // a = 1, b = 2
    assert_eq!((gt.width(), gt.height()), (12, 16));
    for (c, y, x) in [(0, 0, 0), (1, 15, 11), (2, 2, 1)] {
        let want = ((10 + 2 + 7 * y + 3 * x + 50 * c) % 256) as f32 / 255.0;
        assert!((gt.get(c, y, x) - want).abs() < 1e-6, "{c} {y} {x}");
        assert!((noisy.get(c, y, x) - want - 1.0 / 255.0).abs() < 1e-6);
    }
    // The training split does not exist for these blocks.
    assert!(Layout::SiddVal.pairs(&root, Split::Train).is_err());
    Ok(())
}
