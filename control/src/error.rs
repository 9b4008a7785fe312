//! Control's one error type, grouped by whose fault it is, and its mapping to HTTP.

/// What went wrong, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent a value that does not parse or is not allowed.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The caller asked for something that clashes with existing state.
    #[error("{field}: {message}")]
    Conflict { field: String, message: String },
    /// The caller named something that does not exist.
    #[error("no {what} {id:?}")]
    NotFound { what: &'static str, id: String },
    /// Missing or wrong credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Right credentials that may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The resource exists but not with this method.
    #[error("method not allowed here")]
    MethodNotAllowed,
    /// The operator's configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed or holds something unreadable.
    #[error("store: {0}")]
    Store(String),
    /// The disk (or the store's map) has no room: nothing was saved.
    #[error("Control's disk is full, so nothing was saved ({0}); free some space and try again")]
    Full(String),
    /// An operating-system I/O failure.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn conflict(field: &str, message: impl Into<String>) -> Self {
        Error::Conflict {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn not_found(what: &'static str, id: &str) -> Self {
        Error::NotFound {
            what,
            id: id.into(),
        }
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. } => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::MethodNotAllowed => 405,
            Error::NotFound { .. } => 404,
            Error::Conflict { .. } => 409,
            Error::Config(_) | Error::Store(_) | Error::Io { .. } => 500,
            Error::Full(_) => 507,
        }
    }

    /// Whether the error is Control's own, to be logged and not shown in detail.
    pub fn is_internal(&self) -> bool {
        self.status() == 500
    }

    /// What is wrong, without the field's name (for a form that shows it beside the field).
    pub fn reason(&self) -> String {
        match self {
            Error::Invalid { message, .. } | Error::Conflict { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The field at fault, if the caller's.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } | Error::Conflict { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<heed::Error> for Error {
    fn from(e: heed::Error) -> Self {
        // ENOSPC and EDQUOT: the file system is full, or the user's quota is.
        let full = match &e {
            heed::Error::Mdb(heed::MdbError::MapFull) => true,
            heed::Error::Io(io) => matches!(io.raw_os_error(), Some(28 | 122)),
            _ => false,
        };
        match full {
            true => Error::Full(e.to_string()),
            false => Error::Store(e.to_string()),
        }
    }
}
