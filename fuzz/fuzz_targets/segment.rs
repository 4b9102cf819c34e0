//! cargo-fuzz target: arbitrary bytes as a whole segment file, opened and used every way
//! (see `segment_driver.rs`). Run from `fuzz/`: `cargo +nightly fuzz run segment
//! corpus/segment`.
#![no_main]

#[path = "../segment_driver.rs"]
mod driver;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An image without a magic (or a header) makes `open` wait a second for its creator;
    // the stable harness skips those too, and tests/shm_open.rs covers them.
    if data.len() < 384 || data[..8] == [0; 8] {
        return;
    }
    let name = format!("fuzz-{}", std::process::id());
    driver::run_case(&name, data, &mut driver::Reached::default());
});
