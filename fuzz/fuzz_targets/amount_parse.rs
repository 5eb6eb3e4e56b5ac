#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strife_fuzz::amount_parse(data));
