//! What happened to one request.

use std::fmt;
use std::time::Duration;

/// The result of one scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete 2xx answer; times are from the request's due time.
    Ok {
        /// Until the whole body (or `[DONE]`) arrived.
        total: Duration,
        /// Until the first body bytes arrived; streams only.
        ttfb: Option<Duration>,
    },
    /// A failure of the given kind.
    Err(ErrorKind),
}

/// Why a request failed; the display form is the key in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// No TCP connection could be made.
    Connect,
    /// The connection failed before a response head arrived.
    Connection,
    /// A non-2xx status.
    Status(u16),
    /// The body broke off part-way.
    Body,
    /// A stream ended cleanly but without `data: [DONE]`.
    NoDone,
    /// Still in flight when the run's drain time ran out.
    Timeout,
    /// Not sent because `max-in-flight` requests were already outstanding.
    Overload,
    /// Not sent because the generator fell too far behind its schedule.
    NotSent,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Connection => f.write_str("connection"),
            ErrorKind::Status(code) => write!(f, "http_{code}"),
            ErrorKind::Body => f.write_str("body"),
            ErrorKind::NoDone => f.write_str("no_done"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Overload => f.write_str("overload"),
            ErrorKind::NotSent => f.write_str("not_sent"),
        }
    }
}
