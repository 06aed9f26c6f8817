//! The client side's view of a request: the r1 path and query, and the X-Road
//! headers, from arbitrary bytes. No panic; a parsed target names a service.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: path [? query] \n header-name: value \n ...
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if let Ok(t) = veksel_proto::r1::parse_target(path, query) {
        let _ = t.canonical_target();
    }
    let _ = veksel_proto::r1::decoded_segments(path);
    let _ = veksel_proto::r1::single_query_param(query, "serviceCode");
    let mut headers = http::HeaderMap::new();
    for line in lines.take(64) {
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_bytes(value.trim().as_bytes()),
            ) {
                headers.append(n, v);
            }
        }
    }
    let _ = veksel_proto::headers::check_limits(&headers);
    let _ = veksel_proto::headers::client_id(&headers);
    let _ = veksel_proto::headers::security_server(&headers);
    let _ = veksel_proto::headers::optional_field(&headers, "x-road-id");
    let _ = veksel_proto::headers::end_to_end(&headers);
});
