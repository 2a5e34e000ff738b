//! Property-based fuzzing of image decoding: random bytes, and valid PNG/JPEG/BMP files with
//! flipped, inserted or cut bytes, must decode or fail with an error, never panic.
//! CI runs the default number of cases; a longer run: `PROPTEST_CASES=200000 cargo test
//! --release -p daa-degrade --test fuzz_decode`.

use std::path::Path;

use daa_degrade::decode_image;
use proptest::prelude::*;

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(13, 9, |x, y| {
        image::Rgb([(x * 19) as u8, (y * 27) as u8, ((x * y) % 256) as u8])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut buf, format)
        .unwrap_or_else(|e| panic!("{e}"));
    buf.into_inner()
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        encoded(image::ImageFormat::Png),
        encoded(image::ImageFormat::Jpeg),
        encoded(image::ImageFormat::Bmp),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_image(&bytes, Path::new("fuzz"));
    }

    #[test]
    fn mutated_images_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = seeds()[which].clone();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if do_cut {
            let n = cut.index(bytes.len());
            bytes.truncate(n);
        }
        match decode_image(&bytes, Path::new("fuzz.png")) {
            Ok(img) => prop_assert!(img.width() > 0 && img.height() > 0),
            Err(e) => prop_assert!(e.to_string().contains("fuzz.png")),
        }
    }
}
