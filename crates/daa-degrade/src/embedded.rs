//! The photos of the repository's `datasets/` folder, compiled into the library so that a
//! `daa` binary works wherever it is copied or installed (about 2 MB).
//!
//! They are addressed with the reserved path spelling `embedded:<folder>` (e.g.
//! `embedded:photos/train`), which [`crate::list_images`], [`crate::load_image`] and the
//! dataset openers resolve to these bytes instead of the file system. The presets use it;
//! a real folder of that name is never read.
//!
//! ```
//! use daa_degrade::{embedded, list_images, load_image};
//! let files = list_images(&embedded::path("photos/test"))?;
//! assert_eq!(files.len(), 4);
//! let img = load_image(&files[0])?;
//! assert!(img.width() > 0);
//! # Ok::<(), daa_degrade::Error>(())
//! ```

use std::path::{Path, PathBuf};

/// The prefix that marks an embedded path.
pub const PREFIX: &str = "embedded:";

macro_rules! embed {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../../datasets/", $name)) as &[u8],
        )
    };
}

/// Every embedded file: its path under `datasets/` and its bytes. A test checks that this
/// list equals the PNG files of `datasets/`.
pub static FILES: &[(&str, &[u8])] = &[
    embed!("photos/test/coins.png"),
    embed!("photos/test/monarch.png"),
    embed!("photos/test/moon.png"),
    embed!("photos/test/tulips.png"),
    embed!("photos/train/astronaut.png"),
    embed!("photos/train/barbara.png"),
    embed!("photos/train/brick.png"),
    embed!("photos/train/camera.png"),
    embed!("photos/train/chelsea.png"),
    embed!("photos/train/coffee.png"),
    embed!("photos/train/grass.png"),
    embed!("photos/train/gravel.png"),
    embed!("photos/train/hubble_deep_field.png"),
    embed!("photos/train/kodim23.png"),
    embed!("photos/train/rocket.png"),
    embed!("photos/train/sail.png"),
    embed!("real/clock_motion.png"),
];

/// The embedded path of `sub` (a folder or file under `datasets/`), e.g.
/// `path("photos/train")` is `embedded:photos/train`.
pub fn path(sub: &str) -> PathBuf {
    PathBuf::from(format!("{PREFIX}{sub}"))
}

/// The part after `embedded:` when `path` is an embedded path, without trailing slashes.
pub fn name(path: &Path) -> Option<&str> {
    path.to_str()?
        .strip_prefix(PREFIX)
        .map(|s| s.trim_end_matches('/'))
}

/// The bytes of an embedded file, when `path` names one.
pub fn bytes(path: &Path) -> Option<&'static [u8]> {
    let name = name(path)?;
    FILES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The embedded files directly inside the embedded folder `path`, sorted, as embedded paths;
/// `None` when `path` is not an embedded path.
pub(crate) fn list(path: &Path) -> Option<Vec<PathBuf>> {
    let dir = name(path)?;
    let mut out: Vec<PathBuf> = FILES
        .iter()
        .filter_map(|(n, _)| {
            let rest = n.strip_prefix(dir)?.strip_prefix('/')?;
            (!rest.contains('/')).then(|| self::path(n))
        })
        .collect();
    out.sort();
    Some(out)
}

/// The embedded folders, for error messages.
pub fn folders() -> Vec<String> {
    let mut out: Vec<String> = FILES
        .iter()
        .filter_map(|(n, _)| n.rsplit_once('/').map(|(d, _)| format!("{PREFIX}{d}")))
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_matches_the_datasets_folder() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{d:?}: {e}")) {
                let p = e.unwrap_or_else(|e| panic!("{e}")).path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "png") {
                    let rel = p.strip_prefix(&root).unwrap_or_else(|e| panic!("{e}"));
                    on_disk.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let listed: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            listed, on_disk,
            "embedded::FILES must list exactly the PNGs of datasets/"
        );
        for (n, b) in FILES {
            let disk = std::fs::read(root.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(&disk[..], *b, "{n}");
        }
    }

    #[test]
    fn folders_list_their_own_files_only() {
        let train = list(Path::new("embedded:photos/train/")).unwrap_or_default();
        assert_eq!(train.len(), 12);
        assert!(train.iter().all(|p| bytes(p).is_some()));
        assert_eq!(
            list(Path::new("embedded:photos")).unwrap_or_default().len(),
            0
        );
        assert!(list(Path::new("photos/train")).is_none());
        assert_eq!(
            folders(),
            [
                "embedded:photos/test",
                "embedded:photos/train",
                "embedded:real"
            ]
        );
    }
}
