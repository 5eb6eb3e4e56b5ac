#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strife_fuzz::http_json(data));
