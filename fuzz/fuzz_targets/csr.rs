//! Certificate signing requests as the authority receives them at enrolment and
//! renewal: arbitrary text through the CA's CSR path. No panic; anything issued is
//! a certificate veksel can read back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::csr(data));
