//! A global configuration as a gateway receives it: the compact JWS is parsed and
//! verified, then its JSON is read and indexed. Arbitrary bytes go in both as the
//! JWS itself and, signed with a fixed test key, as its payload, so the JSON reader
//! and the index see arbitrary documents too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veksel_proto::conf::{CONF_CTY, ConfIndex, GlobalConf};
use veksel_proto::jws::{SoftwareSigner, generate_p256_pkcs8, sign_compact};

fn key() -> &'static (SoftwareSigner, Vec<u8>) {
    static KEY: OnceLock<(SoftwareSigner, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pkcs8 = generate_p256_pkcs8().expect("key");
        let signer = SoftwareSigner::from_pkcs8(&pkcs8, Vec::new()).expect("signer");
        let public = signer.public_key();
        (signer, public)
    })
}

fuzz_target!(|data: &[u8]| {
    let (signer, public) = key();
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
});
