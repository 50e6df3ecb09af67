//! The CLI's one error type: a message, an exit code, the causes and the
//! update log.

use std::path::PathBuf;

/// A failure: message for stderr, exit code, and for JSON output the
/// causes and the update log.
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
    /// Each `source()` of the error, outermost first.
    pub(crate) causes: Vec<String>,
    /// The update log of a failed apply.
    pub(crate) log: Option<PathBuf>,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>, code: u8) -> Failure {
        Failure {
            message: message.into(),
            code,
            causes: Vec::new(),
            log: None,
        }
    }

    /// The error with its cause chain (every cause, outermost first, as
    /// [`delta_apply::causes`] walks it).
    pub(crate) fn chain(e: &(dyn std::error::Error + 'static), code: u8) -> Failure {
        Failure {
            causes: delta_apply::causes(e).map(ToString::to_string).collect(),
            ..Failure::new(e.to_string(), code)
        }
    }

    /// `{"error": {...}}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "code": self.code,
            "message": self.message,
            "causes": self.causes,
            "log": self.log.as_ref().map(|p| p.display().to_string()),
        }})
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(e.to_string(), 1)
    }
}
