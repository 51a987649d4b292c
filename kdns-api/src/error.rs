//! Errors: a field at fault ([`FieldError`]), a refused request
//! ([`Error`], typed by [`ErrorKind`]: the HTTP layer maps the kind to a
//! status in one place), and the error body on the wire ([`ErrorBody`]).

use core::fmt;

use kdns_core::records::RecordsError;
use serde::{Deserialize, Serialize};

/// A validation error: the key (relative to the object checked, e.g.
/// `instances[0].addrs[1]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The key at fault.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

impl FieldError {
    /// An error of `key`.
    pub fn new(key: impl Into<String>, msg: impl Into<String>) -> FieldError {
        FieldError { key: key.into(), msg: msg.into() }
    }

    /// The same error under `prefix` (`instances[0]` + `addrs[1]`).
    pub fn under(self, prefix: &str) -> FieldError {
        FieldError { key: format!("{prefix}.{}", self.key), msg: self.msg }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.msg)
    }
}

impl std::error::Error for FieldError {}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or a value is invalid (HTTP 400).
    Invalid,
    /// The service, instance or record named does not exist (HTTP 404).
    NotFound,
    /// It clashes with what exists, or belongs to the records file or to
    /// Docker (HTTP 409).
    Conflict,
    /// The daemon could not do it (the state file cannot be written; HTTP 500).
    Internal,
    /// A store it depends on cannot be reached now (etcd, for a host of a
    /// cluster); the same request may succeed later (HTTP 503).
    Unavailable,
}

/// A refused request: its kind and a message naming the field, service,
/// instance or record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The kind.
    pub kind: ErrorKind,
    /// What is wrong.
    pub msg: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Error {
        Error { kind, msg: msg.into() }
    }

    /// [`ErrorKind::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, msg)
    }

    /// [`ErrorKind::NotFound`].
    pub fn not_found(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, msg)
    }

    /// [`ErrorKind::Conflict`].
    pub fn conflict(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, msg)
    }

    /// [`ErrorKind::Internal`].
    pub fn internal(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, msg)
    }

    /// [`ErrorKind::Unavailable`].
    pub fn unavailable(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, msg)
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Error {
        Error::invalid(e.to_string())
    }
}

/// Records that do not compile: a name claimed twice or a CNAME beside
/// other data clashes with what exists; anything else is invalid.
impl From<RecordsError> for Error {
    fn from(e: RecordsError) -> Error {
        let kind = match e {
            RecordsError::Duplicate { .. } | RecordsError::CnameConflict { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        };
        Error::new(kind, e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// The body of every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_have_their_kind() {
        let dup: Error = RecordsError::Duplicate { name: "web.kdns".into() }.into();
        assert_eq!(dup.kind, ErrorKind::Conflict);
        assert!(dup.msg.contains("'web.kdns' is defined twice"), "{dup}");
        let cname: Error = RecordsError::CnameConflict { name: "x.kdns".into() }.into();
        assert_eq!(cname.kind, ErrorKind::Conflict);
        let bad: Error = RecordsError::NotUnderDomain { name: "x.other".into() }.into();
        assert_eq!(bad.kind, ErrorKind::Invalid);
        let field: Error = FieldError::new("addrs[0]", "'x' is not an IP address").under("instances[1]").into();
        assert_eq!((field.kind, field.msg.as_str()), (ErrorKind::Invalid, "instances[1].addrs[0]: 'x' is not an IP address"));
    }

    #[test]
    fn the_error_body() {
        let b = ErrorBody { error: "no service 'web'".into() };
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"error":"no service 'web'"}"#);
    }
}
