use std::path::PathBuf;

/// Errors of the training engine. I/O errors carry the path they concern.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data-layer error (images, datasets, degradations).
    #[error(transparent)]
    Data(#[from] daa_degrade::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path:?}: {reason}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// A checkpoint is malformed or does not match the network.
    #[error("checkpoint {path:?}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Training was stopped on request (Ctrl-C) after checkpointing this step.
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
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl ToString) -> Self {
        Self::Io {
            path: path.into(),
            reason: e.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
