//! The service's errors.

/// What went wrong in the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store refused or failed an operation (named in the message).
    #[error("store: {0}")]
    Store(String),
    /// Generation failed.
    #[error("generation: {0}")]
    Generate(String),
    /// Binding or serving failed.
    #[error("{0}")]
    Serve(String),
}

/// The service's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
