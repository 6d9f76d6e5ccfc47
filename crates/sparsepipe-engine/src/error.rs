//! Engine errors: one variant per kind of failure, with plain wording (a binding adds its own
//! language's advice to the structured ones).

use crate::array::DType;

/// What went wrong, with a message that says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model could not be read, parsed, typed or planned.
    #[error("{0}")]
    ModelLoad(String),
    /// The inputs of a call do not match the model.
    #[error("{0}")]
    Input(String),
    /// An input has another element type than the model's.
    #[error("input '{input}' must be {want}, got {given}")]
    InputDtype {
        /// The input's name.
        input: String,
        /// The model's element type.
        want: DType,
        /// The element type given.
        given: DType,
    },
    /// An input's batch differs from the batch size the engine was loaded with.
    #[error(
        "this engine was loaded with batch_size={batch_size}, but input '{input}' has batch {got}; \
         pass {batch_size} item(s) per call or load it with no fixed batch size"
    )]
    InputBatch {
        /// The input's name.
        input: String,
        /// The batch size the engine was loaded with.
        batch_size: usize,
        /// The batch given.
        got: usize,
    },
    /// An option given to the engine is invalid.
    #[error("{0}")]
    Config(String),
    /// Running the model failed.
    #[error("{0}")]
    Engine(String),
}

/// Result with the engine's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// One line per cause of a tract error, outermost first.
pub(crate) fn chain(e: &tract_core::prelude::TractError) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

/// Runs `f`, turning a panic into [`Error::Engine`] so none reaches the caller.
pub(crate) fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Engine(format!(
                "internal error while {what}: {msg}. The inputs passed every check sparsepipe makes, \
                 so this is a bug; please report it with the model and the inputs"
            )))
        }
    }
}
