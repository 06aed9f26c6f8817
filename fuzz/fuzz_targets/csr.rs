//! Certificate signing requests as the authority receives them at enrolment and
//! renewal: arbitrary text through the CA's CSR path. No panic; anything issued is
//! a certificate veksel can read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veksel_pki::ca::{CertificateAuthority, Profile};

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        CertificateAuthority::create("fuzz CA", now, time::Duration::days(3650)).expect("CA")
    })
}

fuzz_target!(|data: &[u8]| {
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
});
