//! Checkpoints and signed notes (C2SP tlog-checkpoint / signed-note) from arbitrary
//! text: no panic; a parsed checkpoint prints back to a body that parses to the same
//! checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veksel_merkle::checkpoint::{Checkpoint, NoteSigner, NoteVerifier, open_note};

fn verifier() -> &'static NoteVerifier {
    static V: OnceLock<NoteVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let pkcs8 = NoteSigner::generate_pkcs8().expect("key");
        let signer = NoteSigner::from_pkcs8("fuzz.example/log", &pkcs8).expect("signer");
        NoteVerifier::parse(&signer.verifier_key()).expect("verifier key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cp) = Checkpoint::parse(text) {
        let again = Checkpoint::parse(&cp.body()).expect("body parses back");
        assert_eq!(again, cp);
    }
    let _ = open_note(text, std::slice::from_ref(verifier()));
    let _ = NoteVerifier::parse(text);
});
