//! Errors that fail a whole call, and how each surface reports them.
//!
//! A problem with one item of a `GetRateLimits` call is not an error of the call: it is answered in
//! that item's `error` field (see [`crate::request::ItemError`]). A [`CallError`] fails the call as a
//! whole and maps to one gRPC status, which the HTTP gateway maps in turn to an HTTP status the way
//! grpc-gateway does.

use tonic::Code;

/// The most items one `GetRateLimits` call may carry.
pub const MAX_BATCH_SIZE: usize = 1000;

/// A failure of a whole call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// More than [`MAX_BATCH_SIZE`] items in one call (Gubernator's exact message).
    #[error("Requests.RateLimits list too large; max size is '{max}'")]
    TooManyItems {
        /// The largest accepted number of items.
        max: usize,
    },
    /// The request could not be decoded or is otherwise malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request body is larger than the configured limit.
    #[error("request is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The node cannot serve: it is unhealthy or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// Too many calls are executing on this node; the call was refused at once, not queued.
    #[error("too many concurrent requests (this node executes at most {max}); retry later")]
    Overloaded {
        /// `GUBER_MAX_CONCURRENT_REQUESTS`.
        max: usize,
    },
    /// The caller's deadline (`grpc-timeout`) passed before the answer was ready.
    #[error("the deadline of the call expired before it was answered")]
    DeadlineExceeded,
    /// The HTTP client did not send the whole body within `GUBER_HTTP_BODY_TIMEOUT`.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
}

impl CallError {
    /// The gRPC status code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            CallError::TooManyItems { .. } => Code::OutOfRange,
            CallError::InvalidArgument(_) => Code::InvalidArgument,
            CallError::TooLarge { .. } => Code::ResourceExhausted,
            CallError::Unavailable(_) => Code::Unavailable,
            CallError::Overloaded { .. } => Code::ResourceExhausted,
            CallError::DeadlineExceeded | CallError::BodyTimeout(_) => Code::DeadlineExceeded,
        }
    }
}

impl From<CallError> for tonic::Status {
    fn from(error: CallError) -> Self {
        tonic::Status::new(error.code(), error.to_string())
    }
}
