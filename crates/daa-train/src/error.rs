use std::path::PathBuf;

/// Errors of the training engine, by what failed. I/O errors carry the path they concern and
/// the underlying error as their source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data-layer error (images, datasets, degradations).
    #[error(transparent)]
    Data(#[from] daa_degrade::Error),
    /// A dataset is unusable for this run (e.g. held-out images too small for SSIM).
    #[error("dataset: {0}")]
    Dataset(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path:?}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading a JSON file of the run failed.
    #[error("{path:?}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The configuration is invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// The run folder does not hold what the request needs (or holds what it must not).
    #[error("run folder {path:?}: {reason}")]
    RunDir {
        /// The run folder.
        path: PathBuf,
        /// What is there and why that is refused.
        reason: String,
    },
    /// A checkpoint is malformed or does not match the network.
    #[error("checkpoint {path:?}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Two images that must be the same size are not (metrics).
    #[error("{what}: sizes differ, {left:?} vs {right:?}")]
    SizeMismatch {
        /// What was measured.
        what: &'static str,
        /// Width and height of the first image.
        left: (usize, usize),
        /// Width and height of the second image.
        right: (usize, usize),
    },
    /// An image is too small for what is asked of it.
    #[error("{0}")]
    ImageTooSmall(String),
    /// The thread preparing batches stopped (it panicked or its data failed).
    #[error("the data producer thread stopped before training ended")]
    ProducerStopped,
    /// A lock was poisoned by a thread that panicked while holding it.
    #[error("{0} lock poisoned by a panicked thread")]
    Poisoned(&'static str),
    /// Training was stopped on request (Ctrl-C, SIGTERM) after checkpointing this step.
    #[error("interrupted: checkpoint saved at step {step}; continue with --resume")]
    Interrupted {
        /// Steps done and saved.
        step: usize,
    },
    /// Training diverged (too many non-finite losses in a row).
    #[error("training diverged: {0}")]
    Diverged(String),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
