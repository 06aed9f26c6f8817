//! Everything of the ledger that reads outside input: signed entries, tile paths,
//! tiles and entry bundles, witness requests, witness policies and cosigner keys. No
//! panic; what parses prints back to what parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veksel_merkle::checkpoint::{NoteSigner, NoteVerifier};
use veksel_merkle::tiles::{TileId, decode_entries, decode_hashes, encode_entries};
use veksel_merkle::witness::{
    AddCheckpoint, CosignatureVerifier, WitnessPolicy, check_add_checkpoint,
};

fn log_key() -> &'static NoteVerifier {
    static V: OnceLock<NoteVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let pkcs8 = NoteSigner::generate_pkcs8().expect("key");
        let signer = NoteSigner::from_pkcs8("fuzz.example/ledger", &pkcs8).expect("signer");
        NoteVerifier::parse(&signer.verifier_key()).expect("verifier key")
    })
}

fuzz_target!(|data: &[u8]| {
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
        assert_eq!(AddCheckpoint::parse(&request.body()).expect("body parses"), request);
        let _ = check_add_checkpoint(&request, log_key(), None);
    }
    let _ = WitnessPolicy::parse(text);
    let _ = CosignatureVerifier::parse(text);
});
