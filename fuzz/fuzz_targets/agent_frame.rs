//! `ringway::fuzzing::agent_frame`: its invariants are stated there, so that the
//! corpus replay in tests/fuzz_corpus.rs checks exactly the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway::fuzzing::agent_frame(data));
