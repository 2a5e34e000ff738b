use std::path::PathBuf;

/// Errors of the data layer. Each I/O error names the file or folder it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or decoded as an image.
    #[error("cannot read image {path:?}: {reason}")]
    Image {
        /// The offending file.
        path: PathBuf,
        /// Why it failed, in words.
        reason: String,
    },
    /// An image could not be written.
    #[error("cannot write image {path:?}: {reason}")]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// A folder is unusable as a dataset (missing, empty, unpaired names...).
    #[error("dataset {path:?}: {reason}")]
    Dataset {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Invalid parameters (a degradation range, a patch size...).
    #[error("invalid parameter: {0}")]
    Param(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
