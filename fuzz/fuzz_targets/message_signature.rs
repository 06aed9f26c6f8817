//! A message's signature as a peer sends it (single detached JWS or batch form),
//! checked against a descriptor, and the descriptors themselves. Arbitrary input is
//! parsed; a batch made here from the input is verified and must verify only for its
//! own descriptors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veksel_proto::batch::{MessageSignature, sign_batch};
use veksel_proto::descriptor::{RequestDescriptor, ResponseDescriptor};
use veksel_proto::jws::{SoftwareSigner, generate_p256_pkcs8};

fn key() -> &'static (SoftwareSigner, Vec<u8>) {
    static KEY: OnceLock<(SoftwareSigner, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pkcs8 = generate_p256_pkcs8().expect("key");
        let signer = SoftwareSigner::from_pkcs8(&pkcs8, vec![b"cert".to_vec()]).expect("signer");
        let public = signer.public_key();
        (signer, public)
    })
}

fuzz_target!(|data: &[u8]| {
    let (signer, public) = key();
    let _ = serde_json::from_slice::<RequestDescriptor>(data);
    let _ = serde_json::from_slice::<ResponseDescriptor>(data);
    // Layout: signature \0 descriptor.
    let (sig, descriptor) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(sig) = std::str::from_utf8(sig) {
        if let Ok(parsed) = MessageSignature::parse(sig, descriptor) {
            let _ = parsed.cty();
            let _ = parsed.header().chain_der();
            let _ = parsed.verify(public);
        }
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
});
