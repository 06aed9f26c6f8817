//! Checkpoints and signed notes (C2SP tlog-checkpoint / signed-note) from arbitrary
//! text: no panic; a parsed checkpoint prints back to a body that parses to the same
//! checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::checkpoint(data));
