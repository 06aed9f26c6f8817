//! DER from outside: RFC 3161 requests as the authority's TSA receives them, tokens
//! and OCSP responses as gateways receive them, OCSP requests as the responder reads
//! them. No panic; the TSA always answers with a TimeStampResp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veksel_pki::ca::CertificateAuthority;
use veksel_pki::tsa::TimeStampAuthority;

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
                &veksel_pki::ca::Profile::TimeStamping {
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

fuzz_target!(|data: &[u8]| {
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
});
