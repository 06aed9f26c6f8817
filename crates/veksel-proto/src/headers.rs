//! X-Road header names, the header filter of the r1 protocol, and parsing of the
//! X-Road request headers.

use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;
use veksel_id::{ClientId, Fault, FaultCode, GatewayId};

/// `X-Road-Client`: the calling member or subsystem.
pub const X_ROAD_CLIENT: &str = "x-road-client";
/// `X-Road-Service`: the service called (response).
pub const X_ROAD_SERVICE: &str = "x-road-service";
/// `X-Road-Id`: the message id chosen by the client (or generated).
pub const X_ROAD_ID: &str = "x-road-id";
/// `X-Road-UserId`: the end user, country-prefixed.
pub const X_ROAD_USER_ID: &str = "x-road-userid";
/// `X-Road-Issue`: a case or document reference.
pub const X_ROAD_ISSUE: &str = "x-road-issue";
/// `X-Road-Security-Server`: the gateway to send the request to.
pub const X_ROAD_SECURITY_SERVER: &str = "x-road-security-server";
/// `X-Road-Represented-Party`: a third party the client acts for.
pub const X_ROAD_REPRESENTED_PARTY: &str = "x-road-represented-party";
/// `X-Road-Request-Id`: unique id of one request/response pair, set by the gateway.
pub const X_ROAD_REQUEST_ID: &str = "x-road-request-id";
/// `X-Road-Request-Hash`: binds the response to the request (response).
pub const X_ROAD_REQUEST_HASH: &str = "x-road-request-hash";
/// `X-Road-Error`: the fault type, present only on faults raised by a gateway.
pub const X_ROAD_ERROR: &str = "x-road-error";

/// Longest accepted header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 8 * 1024;
/// Most headers accepted on one message.
pub const MAX_HEADER_COUNT: usize = 100;
/// Headers a gateway adds to a request before it goes to the peer (X-Road fields,
/// request id, veksel fields and OCSP staples): an information system's request must
/// leave room for them, or the provider would refuse it as too large.
pub const GATEWAY_ADDED_HEADERS: usize = 16;
/// Longest accepted `X-Road-Id`, `X-Road-UserId` or `X-Road-Issue`.
pub const MAX_XROAD_FIELD_LEN: usize = 255;

/// Headers never passed from one hop to the next: RFC 9110 hop-by-hop headers, the
/// headers that reveal the origin host (r1 §4.3), and framing headers that each hop
/// sets for itself.
const FILTERED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "user-agent",
    "server",
    "content-length",
    "expect",
    "http2-settings",
];

/// X-Road headers the gateway sets itself; a value from the other side is dropped.
const GATEWAY_OWNED: &[&str] = &[
    X_ROAD_CLIENT,
    X_ROAD_SERVICE,
    X_ROAD_ID,
    X_ROAD_USER_ID,
    X_ROAD_ISSUE,
    X_ROAD_SECURITY_SERVER,
    X_ROAD_REPRESENTED_PARTY,
    X_ROAD_REQUEST_ID,
    X_ROAD_REQUEST_HASH,
    X_ROAD_ERROR,
];

/// Prefix of veksel's own gateway-to-gateway headers, never accepted from outside.
pub const VEKSEL_PREFIX: &str = "veksel-";

/// True if a header must not cross from one hop to the next.
pub fn is_filtered(name: &HeaderName, connection_listed: &[String]) -> bool {
    let n = name.as_str();
    FILTERED.contains(&n)
        || GATEWAY_OWNED.contains(&n)
        || n.starts_with(VEKSEL_PREFIX)
        || connection_listed.iter().any(|c| c == n)
}

/// The end-to-end headers of a message, in a canonical order: names sorted, values of
/// one name in the order received. This list is what gets signed and forwarded.
pub fn end_to_end(headers: &HeaderMap) -> Vec<(String, String)> {
    // Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let connection_listed: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut names: Vec<&HeaderName> = headers
        .keys()
        .filter(|n| !is_filtered(n, &connection_listed))
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut out = Vec::new();
    for name in names {
        for value in headers.get_all(name) {
            // Header values are bytes; signing needs text. Non-UTF-8 values are rare and
            // are carried as Latin-1, which maps every byte to one char and back.
            let text = match value.to_str() {
                Ok(s) => s.to_owned(),
                Err(_) => value.as_bytes().iter().map(|b| char::from(*b)).collect(),
            };
            out.push((name.as_str().to_owned(), text));
        }
    }
    out
}

/// End-to-end headers that carry credentials: they travel to the other side (a
/// provider's API takes its tokens that way) but are never written into a descriptor,
/// which both message logs keep and which evidence shows to third parties.
pub const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "set-cookie", "x-api-key"];

/// Prefix of a credential's digest in a descriptor's header list.
pub const CREDENTIAL_DIGEST_PREFIX: &str = "sha256:";

/// The header list a descriptor signs and the logs keep: the end-to-end headers with
/// each credential's value replaced by `sha256:` and the base64url SHA-256 of the
/// value. The signature still binds the credential (both gateways compute the digest
/// from the header they send or receive), but neither log can disclose it.
pub fn descriptor_headers(end_to_end: &[(String, String)]) -> Vec<(String, String)> {
    use base64::Engine;
    end_to_end
        .iter()
        .map(|(name, value)| {
            if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                let digest =
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
                (name.clone(), format!("{CREDENTIAL_DIGEST_PREFIX}{b64}"))
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect()
}

/// Writes a canonical header list back into a map.
pub fn append_all(map: &mut HeaderMap, headers: &[(String, String)]) -> Result<(), Fault> {
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Fault::client(
                FaultCode::BadRequest,
                format!("invalid header name {name:?}"),
            )
        })?;
        let bytes: Vec<u8> = if value.is_ascii() {
            value.as_bytes().to_vec()
        } else {
            value
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect()
        };
        let value = HeaderValue::from_bytes(&bytes).map_err(|_| {
            Fault::client(
                FaultCode::BadRequest,
                format!("invalid value for header {name}"),
            )
        })?;
        map.append(name, value);
    }
    Ok(())
}

/// Refuses messages with too many or too long headers.
pub fn check_limits(headers: &HeaderMap) -> Result<(), Fault> {
    if headers.len() > MAX_HEADER_COUNT {
        return Err(Fault::client(
            FaultCode::TooLarge,
            format!("more than {MAX_HEADER_COUNT} headers"),
        ));
    }
    if let Some((name, _)) = headers
        .iter()
        .find(|(_, v)| v.as_bytes().len() > MAX_HEADER_VALUE_LEN)
    {
        return Err(Fault::client(
            FaultCode::TooLarge,
            format!("header {name} is longer than {MAX_HEADER_VALUE_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Refuses an information system's request whose end-to-end headers would not fit
/// on the message between gateways once the gateway adds its own.
pub fn check_forwardable(end_to_end: &[(String, String)]) -> Result<(), Fault> {
    let room = MAX_HEADER_COUNT - GATEWAY_ADDED_HEADERS;
    if end_to_end.len() > room {
        return Err(Fault::client(
            FaultCode::TooLarge,
            format!(
                "{} headers to pass on; at most {room} fit beside the {GATEWAY_ADDED_HEADERS} the gateway adds",
                end_to_end.len()
            ),
        ));
    }
    Ok(())
}

/// True for the X-Road headers a gateway sets itself and for veksel's own headers:
/// between gateways each is sent once (see [`crate::peer`]).
pub fn is_protocol_header(name: &str) -> bool {
    GATEWAY_OWNED.contains(&name) || name.starts_with(VEKSEL_PREFIX)
}

/// The last value of a header as text (r1: "the last defined header" wins).
pub fn last_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Fault> {
    match headers.get_all(name).iter().next_back() {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            Fault::client(
                FaultCode::BadRequest,
                format!("header {name} is not visible ASCII"),
            )
        }),
    }
}

fn decode_id_header(value: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for p in value.split('/') {
        let decoded = percent_decode_str(p)
            .decode_utf8()
            .map_err(|_| "not valid UTF-8 after percent-decoding".to_owned())?;
        if decoded.contains('/') {
            return Err("an encoded '/' is not allowed inside an identifier part".to_owned());
        }
        parts.push(decoded.into_owned());
    }
    Ok(parts.join("/"))
}

/// Parses `X-Road-Client`. Missing → `Client.MissingHeaderField`; malformed →
/// `Client.InvalidClientIdentifier`.
pub fn client_id(headers: &HeaderMap) -> Result<ClientId, Fault> {
    let raw = last_text(headers, X_ROAD_CLIENT)?.ok_or_else(|| {
        Fault::client(
            FaultCode::MissingHeaderField,
            "the X-Road-Client header is missing",
        )
    })?;
    let text = decode_id_header(raw).map_err(|e| {
        Fault::client(
            FaultCode::InvalidClientIdentifier,
            format!("X-Road-Client: {e}"),
        )
    })?;
    text.parse().map_err(|e| {
        Fault::client(
            FaultCode::InvalidClientIdentifier,
            format!("X-Road-Client: {e}"),
        )
    })
}

/// Parses `X-Road-Security-Server`, if present.
pub fn security_server(headers: &HeaderMap) -> Result<Option<GatewayId>, Fault> {
    let Some(raw) = last_text(headers, X_ROAD_SECURITY_SERVER)? else {
        return Ok(None);
    };
    let bad = |e: String| {
        Fault::client(
            FaultCode::InvalidSecurityServer,
            format!("X-Road-Security-Server: {e}"),
        )
    };
    let text = decode_id_header(raw).map_err(bad)?;
    text.parse()
        .map(Some)
        .map_err(|e: veksel_id::IdError| bad(e.to_string()))
}

/// Reads an optional free-text X-Road field (`X-Road-Id`, `X-Road-UserId`,
/// `X-Road-Issue`, `X-Road-Represented-Party`): visible ASCII, bounded length.
pub fn optional_field(headers: &HeaderMap, name: &str) -> Result<Option<String>, Fault> {
    let Some(v) = last_text(headers, name)? else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_XROAD_FIELD_LEN {
        return Err(Fault::client(
            FaultCode::BadRequest,
            format!("header {name} is longer than {MAX_XROAD_FIELD_LEN} characters"),
        ));
    }
    if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Fault::client(
            FaultCode::BadRequest,
            format!("header {name} must be printable ASCII"),
        ));
    }
    Ok(Some(v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn credentials_are_signed_by_digest_only() {
        let e2e = end_to_end(&map(&[
            ("Authorization", "Bearer secret-token"),
            ("Cookie", "session=secret"),
            ("Accept", "application/json"),
        ]));
        let signed = descriptor_headers(&e2e);
        let text = format!("{signed:?}");
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(signed[0].0, "accept");
        assert_eq!(signed[0].1, "application/json");
        assert_eq!(signed[1].0, "authorization");
        // echo -n 'Bearer secret-token' | openssl dgst -sha256 -binary | base64url
        assert!(signed[1].1.starts_with(CREDENTIAL_DIGEST_PREFIX));
        assert_eq!(signed[1].1.len(), CREDENTIAL_DIGEST_PREFIX.len() + 43);
        // Another credential gives another digest: the signature binds the value.
        let other = descriptor_headers(&end_to_end(&map(&[("Authorization", "Bearer other")])));
        assert_ne!(other[0].1, signed[1].1);
    }

    #[test]
    fn filters_hop_by_hop_host_and_gateway_headers() {
        let m = map(&[
            ("Host", "internal.example"),
            ("User-Agent", "curl"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "5"),
            ("X-Road-Request-Hash", "forged"),
            ("X-Road-Client", "GL/GOV/1/a"),
            ("veksel-signature", "forged"),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("X-Custom", "b"),
            ("x-custom", "a"),
            ("Authorization", "Bearer jwt"),
            ("Cache-Control", "no-cache"),
        ]);
        let kept = end_to_end(&m);
        assert_eq!(
            kept,
            vec![
                ("accept".to_owned(), "application/json".to_owned()),
                ("authorization".to_owned(), "Bearer jwt".to_owned()),
                ("cache-control".to_owned(), "no-cache".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-custom".to_owned(), "b".to_owned()),
                ("x-custom".to_owned(), "a".to_owned()),
            ]
        );
        let mut back = HeaderMap::new();
        append_all(&mut back, &kept).unwrap();
        assert_eq!(end_to_end(&back), kept);
    }

    #[test]
    fn non_utf8_values_survive_a_round_trip() {
        let mut m = HeaderMap::new();
        m.insert("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let kept = end_to_end(&m);
        let mut back = HeaderMap::new();
        append_all(&mut back, &kept).unwrap();
        assert_eq!(back.get("x-latin").unwrap().as_bytes(), b"caf\xe9");
    }

    #[test]
    fn client_header_rules() {
        assert_eq!(
            client_id(&map(&[])).unwrap_err().type_string(),
            "Client.MissingHeaderField"
        );
        assert_eq!(
            client_id(&map(&[("X-Road-Client", "GL/GOV")]))
                .unwrap_err()
                .type_string(),
            "Client.InvalidClientIdentifier"
        );
        assert_eq!(
            client_id(&map(&[("X-Road-Client", "GL/GOV/1/a%2Fb")]))
                .unwrap_err()
                .type_string(),
            "Client.InvalidClientIdentifier"
        );
        // The last header wins, as r1 says.
        let c = client_id(&map(&[
            ("X-Road-Client", "GL/GOV/1/a"),
            ("X-Road-Client", "GL/GOV/2/b"),
        ]))
        .unwrap();
        assert_eq!(c.to_string(), "GL/GOV/2/b");
        let c = client_id(&map(&[("X-Road-Client", "GL/GOV/1%2B1/a")])).unwrap();
        assert_eq!(c.to_string(), "GL/GOV/1+1/a");
    }

    #[test]
    fn free_text_fields_are_bounded() {
        let long = "a".repeat(MAX_XROAD_FIELD_LEN + 1);
        assert!(optional_field(&map(&[("X-Road-Id", &long)]), X_ROAD_ID).is_err());
        assert_eq!(
            optional_field(&map(&[("X-Road-Id", "abc-1")]), X_ROAD_ID)
                .unwrap()
                .as_deref(),
            Some("abc-1")
        );
        assert_eq!(optional_field(&map(&[]), X_ROAD_ID).unwrap(), None);
    }

    #[test]
    fn security_server_header() {
        assert!(security_server(&map(&[])).unwrap().is_none());
        let g = security_server(&map(&[("X-Road-Security-Server", "GL/GOV/1/gw1")])).unwrap();
        assert_eq!(g.unwrap().to_string(), "GL/GOV/1/gw1");
        assert_eq!(
            security_server(&map(&[("X-Road-Security-Server", "GL/GOV/1")]))
                .unwrap_err()
                .type_string(),
            "Client.InvalidSecurityServer"
        );
    }

    #[test]
    fn limits() {
        let mut m = HeaderMap::new();
        for i in 0..=MAX_HEADER_COUNT {
            m.insert(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert_eq!(
            check_limits(&m).unwrap_err().type_string(),
            "Client.TooLarge"
        );
        let big = "v".repeat(MAX_HEADER_VALUE_LEN + 1);
        assert!(check_limits(&map(&[("x-big", &big)])).is_err());
    }
}
