//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/`) through its target on
//! stable Rust: an input that once found a new path must still be handled.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: input {} fails", path.display());
        count += 1;
    }
    // An empty or missing corpus would make this test pass without checking anything.
    assert!(
        count > 10,
        "{target}: only {count} inputs in {}",
        dir.display()
    );
    eprintln!("{target}: {count} inputs replayed");
}

macro_rules! corpora {
    ($($target:ident),* $(,)?) => {$(
        #[test]
        fn $target() {
            replay(stringify!($target), veksel_fuzz::$target);
        }
    )*};
}

corpora!(
    identifiers,
    r1_request,
    global_conf,
    message_signature,
    management_request,
    csr,
    checkpoint,
    tsa_ocsp,
    ledger,
    peer_message,
    client_assertion,
    access_token,
);
