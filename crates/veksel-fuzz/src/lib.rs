//! What each fuzz target feeds to veksel and what it checks, as plain functions.
//!
//! `fuzz/` (cargo-fuzz, libFuzzer, nightly) calls them with generated inputs;
//! `tests/corpora.rs` replays every committed corpus through them on stable Rust, so
//! `cargo test` catches a regression on any input that was ever interesting. Each
//! function panics only when veksel breaks an invariant (a panic inside veksel, or a
//! round trip that does not hold); bad input itself must be refused quietly.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;
use veksel_id::{ClientId, GatewayId, GlobalGroupId, MemberId, ServiceId, SubsystemId};
use veksel_merkle::checkpoint::{Checkpoint, NoteSigner, NoteVerifier, open_note};
use veksel_merkle::tiles::{TileId, decode_entries, decode_hashes, encode_entries};
use veksel_merkle::witness::{
    AddCheckpoint, CosignatureVerifier, WitnessPolicy, check_add_checkpoint,
};
use veksel_pki::ca::{CertificateAuthority, Profile};
use veksel_pki::tsa::TimeStampAuthority;
use veksel_proto::batch::{MessageSignature, sign_batch};
use veksel_proto::conf::{CONF_CTY, ConfIndex, GlobalConf};
use veksel_proto::descriptor::{RequestDescriptor, ResponseDescriptor};
use veksel_proto::jws::{SoftwareSigner, generate_p256_pkcs8, sign_compact};
use veksel_proto::management::{AuthKeyConsent, Change, Consent, GatewayRequest};

fn round_trip<T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug>(s: &str) {
    if let Ok(id) = s.parse::<T>() {
        let again: T = id
            .to_string()
            .parse()
            .unwrap_or_else(|_| panic!("{id} does not parse back"));
        assert_eq!(again, id);
    }
}

/// X-Road identifiers from arbitrary text: no panic, and what parses prints back to
/// the same identifier.
pub fn identifiers(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<MemberId>(s);
    round_trip::<SubsystemId>(s);
    round_trip::<ClientId>(s);
    round_trip::<ServiceId>(s);
    round_trip::<GatewayId>(s);
    round_trip::<GlobalGroupId>(s);
}

/// The client side's view of a request: the r1 path and query, and the X-Road
/// headers, from arbitrary bytes. No panic; a parsed target names a service.
pub fn r1_request(data: &[u8]) {
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
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_bytes(value.trim().as_bytes()),
            )
        {
            headers.append(n, v);
        }
    }
    let _ = veksel_proto::headers::check_limits(&headers);
    let _ = veksel_proto::headers::client_id(&headers);
    let _ = veksel_proto::headers::security_server(&headers);
    let _ = veksel_proto::headers::optional_field(&headers, "x-road-id");
    let _ = veksel_proto::headers::end_to_end(&headers);
}

fn conf_key() -> &'static (SoftwareSigner, Vec<u8>) {
    static KEY: OnceLock<(SoftwareSigner, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pkcs8 = generate_p256_pkcs8().expect("key");
        let signer = SoftwareSigner::from_pkcs8(&pkcs8, Vec::new()).expect("signer");
        let public = signer.public_key();
        (signer, public)
    })
}

/// A global configuration as a gateway receives it: the compact JWS is parsed and
/// verified, then its JSON is read and indexed. Arbitrary bytes go in both as the
/// JWS itself and, signed with a fixed test key, as its payload, so the JSON reader
/// and the index see arbitrary documents too.
pub fn global_conf(data: &[u8]) {
    let (signer, public) = conf_key();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = GlobalConf::verify(text, public, "DEV");
    }
    let Ok(jws) = sign_compact(signer, CONF_CTY, false, data) else {
        return;
    };
    if let Ok(conf) = GlobalConf::verify(&jws, public, "DEV") {
        let _ = conf.check_valid_at(0);
        let _ = ConfIndex::new(conf);
    }
}

fn batch_key() -> &'static (SoftwareSigner, Vec<u8>) {
    static KEY: OnceLock<(SoftwareSigner, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pkcs8 = generate_p256_pkcs8().expect("key");
        let signer = SoftwareSigner::from_pkcs8(&pkcs8, vec![b"cert".to_vec()]).expect("signer");
        let public = signer.public_key();
        (signer, public)
    })
}

/// A message's signature as a peer sends it (single detached JWS or batch form),
/// checked against a descriptor, and the descriptors themselves. Arbitrary input is
/// parsed; a batch made here from the input is verified and must verify only for its
/// own descriptors.
pub fn message_signature(data: &[u8]) {
    let (signer, public) = batch_key();
    let _ = serde_json::from_slice::<RequestDescriptor>(data);
    let _ = serde_json::from_slice::<ResponseDescriptor>(data);
    // Layout: signature \0 descriptor.
    let (sig, descriptor) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(sig) = std::str::from_utf8(sig)
        && let Ok(parsed) = MessageSignature::parse(sig, descriptor)
    {
        let _ = parsed.cty();
        let _ = parsed.header().chain_der();
        let _ = parsed.verify(public);
    }
    // Split the input into up to 8 descriptors, sign them as a batch, and check each.
    let parts: Vec<&[u8]> = data.split(|b| *b == b'|').take(8).collect();
    let items: Vec<(&str, &[u8])> = parts.iter().map(|p| ("veksel-request+json", *p)).collect();
    let sigs = sign_batch(signer, &items).expect("signing works");
    for (i, s) in sigs.iter().enumerate() {
        let m = MessageSignature::parse(s, parts[i]).expect("own signature parses");
        m.verify(public).expect("own signature verifies");
        if let Some(other) = parts.iter().find(|p| **p != parts[i]) {
            let m = MessageSignature::parse(s, other).expect("parses");
            assert!(
                m.verify(public).is_err(),
                "a signature verified another descriptor"
            );
        }
    }
}

/// Management requests as the authority receives them: a change (applications at
/// /apply/v1), a gateway request and consents, from arbitrary JSON. No panic;
/// whatever parses serialises back to the same value.
pub fn management_request(data: &[u8]) {
    if let Ok(change) = serde_json::from_slice::<Change>(data) {
        let _ = change.validate();
        let _ = (change.kind(), change.gateway(), change.consenting_member());
        let again: Change =
            serde_json::from_slice(&serde_json::to_vec(&change).expect("serialises"))
                .expect("parses back");
        assert_eq!(again, change);
    }
    let _ = serde_json::from_slice::<GatewayRequest>(data);
    let _ = serde_json::from_slice::<Consent>(data);
    let _ = serde_json::from_slice::<AuthKeyConsent>(data);
}

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        CertificateAuthority::create("fuzz CA", now, time::Duration::days(3650)).expect("CA")
    })
}

/// Certificate signing requests as the authority receives them at enrolment and
/// renewal: arbitrary text through the CA's CSR path. No panic; anything issued is
/// a certificate veksel can read back.
pub fn csr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let profile = Profile::MemberSigning {
        member: "DEV/GOV/10000001".parse().expect("member"),
        name: "Fuzz".into(),
    };
    let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_100).expect("time");
    if let Ok(der) = ca().issue_from_csr(text, &profile, now, time::Duration::days(1)) {
        veksel_pki::CertInfo::parse(&der).expect("an issued certificate reads back");
    }
}

/// The verifier of a fresh note key for `origin`.
fn fresh_note_verifier(origin: &str) -> NoteVerifier {
    let pkcs8 = NoteSigner::generate_pkcs8().expect("key");
    let signer = NoteSigner::from_pkcs8(origin, &pkcs8).expect("signer");
    NoteVerifier::parse(&signer.verifier_key()).expect("verifier key")
}

fn note_verifier() -> &'static NoteVerifier {
    static V: OnceLock<NoteVerifier> = OnceLock::new();
    V.get_or_init(|| fresh_note_verifier("fuzz.example/log"))
}

/// Checkpoints and signed notes (C2SP tlog-checkpoint / signed-note) from arbitrary
/// text: no panic; a parsed checkpoint prints back to a body that parses to the same
/// checkpoint.
pub fn checkpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cp) = Checkpoint::parse(text) {
        let again = Checkpoint::parse(&cp.body()).expect("body parses back");
        assert_eq!(again, cp);
    }
    let _ = open_note(text, std::slice::from_ref(note_verifier()));
    let _ = NoteVerifier::parse(text);
}

struct Setup {
    ca: CertificateAuthority,
    tsa: TimeStampAuthority,
    roots: veksel_pki::verify::Roots,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let ca =
            CertificateAuthority::create("fuzz CA", now, time::Duration::days(3650)).expect("CA");
        let key = veksel_pki::KeyFile::generate().expect("key");
        let cert = ca
            .issue_from_csr(
                &veksel_pki::ca::make_csr(&key, "tsa").expect("CSR"),
                &Profile::TimeStamping {
                    name: "fuzz TSA".into(),
                },
                now,
                time::Duration::days(365),
            )
            .expect("TSA certificate");
        let tsa =
            TimeStampAuthority::new(key, cert, veksel_pki::tsa::VEKSEL_TSA_POLICY).expect("TSA");
        let roots =
            veksel_pki::verify::Roots::from_ders(vec![ca.cert_der().to_vec()]).expect("roots");
        Setup { ca, tsa, roots }
    })
}

/// DER from outside: RFC 3161 requests as the authority's TSA receives them, tokens
/// and OCSP responses as gateways receive them, OCSP requests as the responder reads
/// them. No panic; the TSA always answers with a TimeStampResp.
pub fn tsa_ocsp(data: &[u8]) {
    let s = setup();
    let reply = s.tsa.respond(data, 1_800_000_100, &[1; 16]);
    assert!(!reply.is_empty(), "the TSA always answers");
    let _ = veksel_pki::tsa::verify_token(data, &[0; 32], &s.roots, &[]);
    let _ = veksel_pki::ocsp::Responder::serials(data);
    let _ = veksel_pki::ocsp::verify_response(
        data,
        s.ca.cert_der(),
        s.ca.cert_der(),
        1_800_000_100,
        3600,
    );
}

fn log_key() -> &'static NoteVerifier {
    static V: OnceLock<NoteVerifier> = OnceLock::new();
    V.get_or_init(|| fresh_note_verifier("fuzz.example/ledger"))
}

/// Everything of the ledger that reads outside input: signed entries, tile paths,
/// tiles and entry bundles, witness requests, witness policies and cosigner keys. No
/// panic; what parses prints back to what parses the same.
pub fn ledger(data: &[u8]) {
    let _ = veksel_proto::ledger::peek(data);
    if let Ok(entries) = decode_entries(data) {
        let again = encode_entries(entries.iter().copied()).expect("entries re-encode");
        assert_eq!(again, data);
    }
    let _ = decode_hashes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tile) = TileId::parse(text) {
        assert_eq!(tile.path(), text, "one spelling per tile");
    }
    if let Ok(request) = AddCheckpoint::parse(text) {
        assert_eq!(
            AddCheckpoint::parse(&request.body()).expect("body parses"),
            request
        );
        let _ = check_add_checkpoint(&request, log_key(), None);
    }
    let _ = WitnessPolicy::parse(text);
    let _ = CosignatureVerifier::parse(text);
}

/// The message between gateways as a provider's gateway reads it: a request head from
/// an arbitrary method, target and headers, and trailers in both directions. No panic;
/// a head that decodes encodes back to one that decodes the same and builds the same
/// descriptor; trailers that decode re-encode to the same (signed fields, and a
/// provider's commit confirmation or fault); the time window holds at the edges of
/// `i64`.
///
/// Layout: `method target\n` then `name: value` lines; a line `--` starts the trailers;
/// the first 16 bytes, when present, are read as two `i64` for the window.
pub fn peer_message(data: &[u8]) {
    use veksel_proto::descriptor::BodyDigest;
    use veksel_proto::peer::{
        Commit, Direction, RequestHead, ResponseHead, SignedTrailers, check_window,
    };
    if data.len() >= 16 {
        let created = i64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let now = i64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        let _ = check_window(created, now, 300_000, 60_000);
    }
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let mut headers = http::HeaderMap::new();
    let mut trailers = http::HeaderMap::new();
    let mut in_trailers = false;
    for line in lines.take(160) {
        if line == "--" {
            in_trailers = true;
            continue;
        }
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_bytes(value.trim().as_bytes()),
            )
        {
            if in_trailers {
                trailers.append(n, v);
            } else {
                headers.append(n, v);
            }
        }
    }
    let body = BodyDigest::of(data);
    for direction in [Direction::Request, Direction::Response] {
        if let Ok(t) = SignedTrailers::decode(Some(&trailers), direction, &body) {
            let again = SignedTrailers::decode(Some(&t.encode()), direction, &body)
                .expect("encoded trailers decode");
            assert_eq!(again, t);
        }
    }
    if let Ok(commit) = Commit::decode(Some(&trailers)) {
        // A fault's message is made printable once; after that it is stable.
        let once = Commit::decode(Some(&commit.encode())).expect("an encoded commit decodes");
        let twice = Commit::decode(Some(&once.encode())).expect("an encoded commit decodes");
        assert_eq!(once, twice);
    }
    let Ok(head) = RequestHead::decode(method, target, &headers) else {
        return;
    };
    let mut encoded = http::HeaderMap::new();
    head.encode(&mut encoded).expect("a decoded head encodes");
    let again = RequestHead::decode(method, &head.target.canonical_target(), &encoded)
        .expect("an encoded head decodes");
    assert_eq!(again, head);
    let provider: GatewayId = "DEV/GOV/10000001/gw1".parse().expect("gateway id");
    let descriptor = head.descriptor(&provider, body.clone());
    assert_eq!(again.descriptor(&provider, body.clone()), descriptor);
    let hash = veksel_proto::descriptor::request_hash(&veksel_proto::descriptor::canonical_bytes(
        &descriptor,
    ));
    let answer = ResponseHead::answering(&head, hash.clone(), 200, head.headers.clone());
    let mut map = http::HeaderMap::new();
    if answer.encode(&mut map).is_ok() {
        let back = ResponseHead::decode(&head, &hash, 200, &map).expect("an answer decodes");
        assert_eq!(back.request_id, head.request_id);
    }
}

/// JWT-bearer client assertions (RFC 7523) as a token service receives them. The bytes
/// go in as the assertion itself: no panic, and the key that signs nothing here
/// verifies nothing. And, when they read as claims, signed with a test key: then the
/// verifier's verdict is exactly that of the claim checks alone.
pub fn client_assertion(data: &[u8]) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use veksel_proto::jws::Signer;
    use veksel_proto::oauth::{AssertionClaims, ParsedAssertion, check_claims};
    const ISSUER: &str = "https://authority.test/token";
    const NOW: i64 = 1_800_000_000;
    let (signer, public) = conf_key();
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(parsed) = ParsedAssertion::parse(text)
    {
        let _ = parsed.unverified_claims();
        assert!(
            parsed.verify(public, ISSUER, NOW).is_err(),
            "a signature no one made here verifies"
        );
    }
    // Small enough that its base64url stays within the assertion limit.
    if data.len() > 8 * 1024 {
        return;
    }
    if let Ok(claims) = serde_json::from_slice::<AssertionClaims>(data) {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"fuzz"}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(data));
        let signature = signer.sign(input.as_bytes()).expect("sign");
        let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        let verdict = ParsedAssertion::parse(&jwt).and_then(|p| p.verify(public, ISSUER, NOW));
        assert_eq!(
            verdict.map(|_| ()),
            check_claims(&claims, ISSUER, NOW),
            "the verifier and the claim checks disagree"
        );
    }
}

/// Access tokens from arbitrary bytes, as the token and as its signed claims, then
/// the gateway's rules over whatever verified: no panic; nothing verifies that was
/// not signed with the published key; a signed token verifies exactly when its claims
/// parse and its issuer and window hold.
pub fn access_token(data: &[u8]) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use veksel_proto::oauth::{
        ACCESS_TOKEN_TYP, AccessTokenClaims, Jwk, MAX_CLOCK_SKEW_SECS, TokenService, authorise,
        verify_access_token,
    };
    const ISSUER: &str = "https://authority.test";
    const NOW: i64 = 1_800_000_000;
    let (signer, public) = conf_key();
    let Ok(jwk) = Jwk::es256(public) else {
        return;
    };
    let keys = [jwk.clone()];
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(
            verify_access_token(text, &keys, ISSUER, NOW).is_err(),
            "a token no one signed here verifies"
        );
    }
    if data.len() > 8 * 1024 {
        return;
    }
    let header = format!(
        r#"{{"alg":"ES256","typ":"{ACCESS_TOKEN_TYP}","kid":"{}"}}"#,
        jwk.kid
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(data)
    );
    let signature = veksel_proto::jws::Signer::sign(signer, input.as_bytes()).expect("sign");
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let verdict = verify_access_token(&token, &keys, ISSUER, NOW);
    let expected = serde_json::from_slice::<AccessTokenClaims>(data)
        .ok()
        .filter(|c| {
            c.iss == ISSUER
                && c.exp > NOW - MAX_CLOCK_SKEW_SECS
                && c.iat <= NOW + MAX_CLOCK_SKEW_SECS
        });
    assert_eq!(
        verdict.is_ok(),
        expected.is_some(),
        "the verifier and the claim checks disagree"
    );
    if let Ok(claims) = verdict {
        let ts = TokenService {
            issuer: ISSUER.into(),
            keys: keys.to_vec(),
            revoked: vec![],
            delegations: vec![],
        };
        let service = "DEV/GOV/1/app/svc".parse().expect("service id");
        let caller = "DEV/GOV/2".parse().expect("member id");
        if authorise(&claims, "a:b", &service, &caller, &ts).is_ok() {
            assert!(
                claims.scopes().contains(&"a:b"),
                "admitted without the scope"
            );
            assert_eq!(
                claims.consumer, "DEV/GOV/2",
                "admitted for another consumer"
            );
        }
    }
}
