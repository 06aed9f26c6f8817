//! Everything of the ledger that reads outside input: signed entries, tile paths,
//! tiles and entry bundles, witness requests, witness policies and cosigner keys. No
//! panic; what parses prints back to what parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::ledger(data));
