//! The client side of X-Road's Message Protocol for REST, version `r1`:
//! `{METHOD} /r1/{instance}/{class}/{member}/{subsystem}/{service}[/path][?query]`.
//!
//! Parsing is strict where X-Road is lenient: identifier parts are percent-decoded and
//! must then use X-Road's identifier alphabet (so an encoded `/` inside an identifier is
//! refused), and the service path may not contain dot segments, encoded slashes or
//! backslashes, or NUL — the forms used to slip past path-based access rules.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use veksel_id::{Fault, FaultCode, ServiceId, validate_part};

/// Longest request target (path and query) accepted, in bytes. Browsers and most
/// HTTP clients stop near 2,000; 8 KiB leaves room for long query strings.
pub const MAX_TARGET_LEN: usize = 8 * 1024;

/// Service codes that X-Road reserves for its REST metaservices.
pub const META_LIST_METHODS: &str = "listMethods";
/// See [`META_LIST_METHODS`].
pub const META_ALLOWED_METHODS: &str = "allowedMethods";
/// See [`META_LIST_METHODS`].
pub const META_GET_OPENAPI: &str = "getOpenAPI";

/// A REST metaservice of a provider subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metaservice {
    /// Every REST service of the subsystem with its endpoints.
    ListMethods,
    /// The services and endpoints the calling client may use.
    AllowedMethods,
    /// The OpenAPI description of one service (`?serviceCode=`).
    GetOpenApi,
}

impl Metaservice {
    /// Recognises a metaservice by its service code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            META_LIST_METHODS => Some(Self::ListMethods),
            META_ALLOWED_METHODS => Some(Self::AllowedMethods),
            META_GET_OPENAPI => Some(Self::GetOpenApi),
            _ => None,
        }
    }
}

/// A parsed `/r1/...` request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R1Target {
    /// The service called.
    pub service: ServiceId,
    /// The path after the service code, still percent-encoded exactly as received
    /// (empty, or starting with `/`). Passed to the provider unchanged.
    pub service_path: String,
    /// The query string without `?`, exactly as received.
    pub query: Option<String>,
}

impl R1Target {
    /// The metaservice, when the service code names one.
    pub fn metaservice(&self) -> Option<Metaservice> {
        Metaservice::from_code(self.service.code())
    }

    /// The canonical request target for this call, with each identifier part
    /// percent-encoded again, as sent between gateways.
    pub fn canonical_target(&self) -> String {
        let mut s = format!(
            "/r1/{}{}",
            encode_id(&self.service.to_string()),
            self.service_path
        );
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// Characters escaped when an identifier part is written into a URL path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'/');

/// Percent-encodes each `/`-separated part of an identifier.
pub fn encode_id(id: &str) -> String {
    id.split('/')
        .map(|p| utf8_percent_encode(p, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn bad_request(message: impl Into<String>) -> Fault {
    Fault::client(FaultCode::BadRequest, message)
}

/// True for bytes allowed unencoded in a URL path segment (RFC 3986 `pchar` minus `%`).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Checks that `raw` is well-formed percent-encoded text whose unencoded bytes are
/// `pchar`s (plus `extra`), and returns the decoded bytes.
fn strict_decode(raw: &str, extra: &[u8], what: &str) -> Result<Vec<u8>, Fault> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or_else(|| bad_request(format!("{what}: incomplete percent-encoding")))?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad_request(format!("{what}: invalid percent-encoding")));
            }
            i += 3;
        } else if is_pchar(b) || extra.contains(&b) {
            i += 1;
        } else {
            return Err(bad_request(format!(
                "{what}: character {:?} must be percent-encoded",
                char::from(b)
            )));
        }
    }
    Ok(percent_decode_str(raw).collect())
}

/// Decodes one identifier segment of the URL and validates it against X-Road's alphabet.
fn decode_id_part(raw: &str, index: usize) -> Result<String, Fault> {
    const NAMES: [&str; 5] = [
        "instance",
        "member class",
        "member code",
        "subsystem code",
        "service code",
    ];
    let name = NAMES.get(index).copied().unwrap_or("identifier");
    let decoded = strict_decode(raw, &[], name)?;
    let text = String::from_utf8(decoded)
        .map_err(|_| bad_request(format!("{name}: not valid UTF-8 after percent-decoding")))?;
    validate_part("service", index, &text)
        .map_err(|e| bad_request(format!("{name} {text:?} in the URL: {e}")))?;
    Ok(text)
}

/// Validates the service path that follows the service code.
fn check_service_path(raw: &str) -> Result<(), Fault> {
    if raw.is_empty() {
        return Ok(());
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(bad_request("service path must start with '/'"));
    };
    for segment in rest.split('/') {
        let decoded = strict_decode(segment, &[], "service path")?;
        if decoded.is_empty() {
            continue;
        }
        if decoded == b"." || decoded == b".." {
            return Err(bad_request(
                "service path: dot segments ('.' and '..') are not allowed",
            ));
        }
        if decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return Err(bad_request(
                "service path: encoded '/' or '\\' inside a segment is not allowed",
            ));
        }
        if decoded.contains(&0) {
            return Err(bad_request("service path: NUL is not allowed"));
        }
    }
    Ok(())
}

/// Validates a raw query string; it is passed on unchanged.
fn check_query(raw: &str) -> Result<(), Fault> {
    strict_decode(raw, b"/?", "query").map(|_| ())
}

/// Parses the path and query of a client request.
///
/// `path` is the raw (still percent-encoded) path; `query` the raw query without `?`.
pub fn parse_target(path: &str, query: Option<&str>) -> Result<R1Target, Fault> {
    if path.len() + query.map_or(0, str::len) > MAX_TARGET_LEN {
        return Err(Fault::client(
            FaultCode::TooLarge,
            format!("request target is longer than {MAX_TARGET_LEN} bytes"),
        ));
    }
    let Some(after_slash) = path.strip_prefix('/') else {
        return Err(bad_request("request path must start with '/'"));
    };
    let mut parts = after_slash.splitn(7, '/');
    let version = parts.next().unwrap_or_default();
    if version != "r1" {
        return Err(Fault::client(
            FaultCode::InvalidProtocolVersion,
            format!("unsupported protocol version {version:?}; this gateway speaks r1"),
        ));
    }
    let mut ids = Vec::with_capacity(5);
    for index in 0..5 {
        match parts.next() {
            Some(raw) => ids.push(decode_id_part(raw, index)?),
            None => {
                return Err(bad_request(
                    "the URL must name a service as /r1/{instance}/{class}/{member}/{subsystem}/{service}",
                ));
            }
        }
    }
    let service_path = match parts.next() {
        Some(rest) => format!("/{rest}"),
        None => String::new(),
    };
    check_service_path(&service_path)?;
    if let Some(q) = query {
        check_query(q)?;
    }
    let service: ServiceId = ids
        .join("/")
        .parse()
        .map_err(|e| bad_request(format!("{e}")))?;
    Ok(R1Target {
        service,
        service_path,
        query: query.map(str::to_owned),
    })
}

/// Decodes the service path into segments for access-rule matching. The path must
/// already have passed [`parse_target`].
pub fn decoded_segments(service_path: &str) -> Vec<String> {
    service_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

/// Returns the single value of `name` in a raw query string. Refuses duplicates, the
/// classic HTTP parameter pollution trick, with a precise error.
pub fn single_query_param(query: Option<&str>, name: &str) -> Result<Option<String>, Fault> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(k).decode_utf8_lossy();
        if k.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(bad_request(format!(
                    "query parameter {name} is given more than once"
                )));
            }
            let v = percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            found = Some(v);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<R1Target, Fault>) -> String {
        r.unwrap_err().type_string()
    }

    #[test]
    fn parses_service_path_and_query() {
        let t = parse_target(
            "/r1/GL/GOV/123/pop/persons/v1/persons/42",
            Some("a=1&b=%20"),
        )
        .unwrap();
        assert_eq!(t.service.to_string(), "GL/GOV/123/pop/persons");
        assert_eq!(t.service_path, "/v1/persons/42");
        assert_eq!(t.query.as_deref(), Some("a=1&b=%20"));
        assert_eq!(
            t.canonical_target(),
            "/r1/GL/GOV/123/pop/persons/v1/persons/42?a=1&b=%20"
        );
        let t = parse_target("/r1/GL/GOV/123/pop/persons", None).unwrap();
        assert_eq!(t.service_path, "");
        let t = parse_target("/r1/GL/GOV/123/pop/persons/", None).unwrap();
        assert_eq!(t.service_path, "/");
    }

    #[test]
    fn decodes_identifier_parts() {
        let t = parse_target("/r1/GL/GOV/1%2B2/pop/p%3Dq", None).unwrap();
        assert_eq!(t.service.to_string(), "GL/GOV/1+2/pop/p=q");
        assert_eq!(t.canonical_target(), "/r1/GL/GOV/1+2/pop/p=q");
    }

    #[test]
    fn refuses_malformed_targets() {
        assert_eq!(
            code(parse_target("/r2/GL/GOV/1/a/b", None)),
            "Client.InvalidProtocolVersion"
        );
        assert_eq!(
            code(parse_target("/r1/GL/GOV/1/a", None)),
            "Client.BadRequest"
        );
        assert_eq!(
            code(parse_target("/r1/GL/GOV/1//b", None)),
            "Client.BadRequest"
        );
        assert_eq!(
            code(parse_target("/r1/GL/GOV/1/a%2Fb/c", None)),
            "Client.BadRequest"
        );
        assert_eq!(
            code(parse_target("/r1/GL/GOV/1/a_b/c", None)),
            "Client.BadRequest"
        );
        assert_eq!(
            code(parse_target("/r1/GL/GOV/%zz/a/c", None)),
            "Client.BadRequest"
        );
        assert_eq!(
            code(parse_target("/r1/GL/GOV/1/a/c%", None)),
            "Client.BadRequest"
        );
        assert_eq!(
            code(parse_target("/r1/GL/GOV/../a/c", None)),
            "Client.BadRequest"
        );
        assert_eq!(
            code(parse_target("r1/GL/GOV/1/a/c", None)),
            "Client.BadRequest"
        );
        let long = format!("/r1/GL/GOV/1/a/c/{}", "x".repeat(MAX_TARGET_LEN));
        assert_eq!(code(parse_target(&long, None)), "Client.TooLarge");
    }

    #[test]
    fn refuses_path_tricks() {
        for p in [
            "/r1/GL/GOV/1/a/c/x/../admin",
            "/r1/GL/GOV/1/a/c/x/%2e%2E/admin",
            "/r1/GL/GOV/1/a/c/./admin",
            "/r1/GL/GOV/1/a/c/x%2Fadmin",
            "/r1/GL/GOV/1/a/c/x%5Cadmin",
            "/r1/GL/GOV/1/a/c/x%00",
            "/r1/GL/GOV/1/a/c/x y",
            "/r1/GL/GOV/1/a/c/x\\y",
        ] {
            assert_eq!(code(parse_target(p, None)), "Client.BadRequest", "{p}");
        }
        assert_eq!(
            code(parse_target("/r1/GL/GOV/1/a/c", Some("a=<b>"))),
            "Client.BadRequest"
        );
        assert!(parse_target("/r1/GL/GOV/1/a/c/%C3%A6%20x", Some("q=a/b?c")).is_ok());
    }

    #[test]
    fn decoded_segments_for_matching() {
        assert_eq!(decoded_segments("/v1/a%20b//c/"), vec!["v1", "a b", "c"]);
        assert!(decoded_segments("").is_empty());
    }

    #[test]
    fn single_query_param_refuses_duplicates() {
        assert_eq!(
            single_query_param(Some("serviceCode=persons"), "serviceCode").unwrap(),
            Some("persons".into())
        );
        assert_eq!(
            single_query_param(Some("x=1"), "serviceCode").unwrap(),
            None
        );
        assert_eq!(single_query_param(None, "serviceCode").unwrap(), None);
        assert!(single_query_param(Some("serviceCode=a&servicecode=b"), "serviceCode").is_err());
    }

    #[test]
    fn metaservices_are_recognised() {
        let t = parse_target("/r1/GL/GOV/1/a/listMethods", None).unwrap();
        assert_eq!(t.metaservice(), Some(Metaservice::ListMethods));
        let t = parse_target("/r1/GL/GOV/1/a/persons", None).unwrap();
        assert_eq!(t.metaservice(), None);
    }
}
