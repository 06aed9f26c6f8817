//! veksel's wire formats and protocol rules, free of sockets, databases and clocks:
//! every function takes the time it needs as an argument, so all of it can be tested
//! and fuzzed in isolation.
//!
//! - [`r1`]: the client side of X-Road's Message Protocol for REST.
//! - [`headers`]: X-Road headers and the hop-by-hop filter.
//! - [`descriptor`]: what gateways sign for each request and response.
//! - [`jws`]: compact and detached JWS with ES256.
//! - [`conf`]: the signed global configuration and its anchor.
//! - [`access`]: deny-by-default access rights.
//! - [`meta`]: metaservice and error bodies.

#![warn(missing_docs)]

pub mod access;
pub mod conf;
pub mod descriptor;
pub mod headers;
pub mod jws;
pub mod meta;
pub mod r1;

/// Formats Unix milliseconds as RFC 3339 in UTC, for humans and JSON APIs.
pub fn rfc3339(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix_ms.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
