//! The stable fuzz harness: the segment fuzz driver (`fuzz/segment_driver.rs`, shared with
//! the cargo-fuzz target) over the corpus in `fuzz/corpus/segment/` and over random
//! mutations of freshly made segments, with a deterministic seed.
//!
//! `CONDUIT_FUZZ_CASES` sets the number of mutated cases (default 3000, a few seconds),
//! `CONDUIT_FUZZ_SEED` the seed (printed, so a failing run can be repeated).
//! `CONDUIT_FUZZ_WRITE_CORPUS=1` saves the fresh seed images into the corpus.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

#[path = "../fuzz/segment_driver.rs"]
mod driver;

use driver::{
    Reached, Rng, mutate, run_case, valid_image, valid_mailbox_image, valid_signal_image,
    valid_spsc_image,
};
use shm_support::{Name, watchdog};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/segment");

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether an open of `image` would wait for a creator (no magic yet, or too short for
/// a header): `open` then retries for a second before it reports the segment as not
/// initialised. `tests/shm_open.rs` covers that path; the harness skips its wait.
fn waits_for_creator(image: &[u8]) -> bool {
    image.len() < 384 || image[..8] == [0; 8]
}

#[test]
fn arbitrary_segments_open_or_fail_cleanly_and_never_hang() {
    watchdog(|| {
        let cases = env_u64("CONDUIT_FUZZ_CASES", 3000);
        let seed = env_u64("CONDUIT_FUZZ_SEED", 0x5eed_c0de_2026_1204) | 1;
        println!("fuzz_segments: seed {seed:#x}, {cases} mutated cases");
        let name = Name::new("fuzz");
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        if let Ok(dir) = std::fs::read_dir(CORPUS) {
            let mut files: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort();
            for f in files {
                seeds.push(std::fs::read(&f).unwrap());
            }
        }
        let corpus_len = seeds.len();
        let mut fresh: Vec<Vec<u8>> = [(false, 0), (false, 3), (true, 0), (true, 3)]
            .into_iter()
            .map(|(bytes, queued)| valid_image(&name, bytes, queued))
            .chain([0, 3].map(|queued| valid_signal_image(&name, queued)))
            .collect();
        fresh.extend(
            [(false, 2), (true, 2)]
                .into_iter()
                .map(|(bytes, queued)| valid_mailbox_image(&name, bytes, queued)),
        );
        fresh.extend(
            [(false, 3), (true, 3)]
                .into_iter()
                .map(|(bytes, queued)| valid_spsc_image(&name, bytes, queued)),
        );
        if std::env::var("CONDUIT_FUZZ_WRITE_CORPUS").is_ok() {
            std::fs::create_dir_all(CORPUS).unwrap();
            for (i, image) in fresh.iter().enumerate() {
                std::fs::write(format!("{CORPUS}/fresh-{i}.bin"), image).unwrap();
            }
        }
        seeds.extend(fresh);

        let mut reached = Reached::default();
        let mut executed = 0u64;
        let mut skipped = 0u64;
        // Every seed as it is, then mutations of random seeds, and some plain noise.
        for image in &seeds {
            run_case(&name, image, &mut reached);
            executed += 1;
        }
        let mut rng = Rng(seed);
        for case in 0..cases {
            let mut image = if case % 10 == 9 {
                let len = 384 + rng.below(20_000) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                seeds[rng.below(seeds.len() as u64) as usize].clone()
            };
            mutate(&mut image, &mut rng);
            if waits_for_creator(&image) {
                skipped += 1;
                continue;
            }
            run_case(&name, &image, &mut reached);
            executed += 1;
        }
        println!(
            "fuzz_segments: {executed} cases executed ({corpus_len} from the corpus, \
             {skipped} skipped as waiting for a creator), {} distinct outcomes:",
            reached.outcomes.len()
        );
        for o in &reached.outcomes {
            println!("  {o}");
        }
        // The harness must get past validation, and meet its failures, to mean anything.
        assert!(reached.outcomes.contains("typed receiver: ok"));
        assert!(reached.outcomes.contains("byte sender: ok"));
        assert!(reached.outcomes.contains("mailbox: ok"));
        assert!(reached.outcomes.contains("byte mailbox: ok"));
        assert!(reached.outcomes.contains("signal target: ok"));
        assert!(
            reached
                .outcomes
                .iter()
                .filter(|o| o.contains("InvalidData"))
                .count()
                >= 4,
            "{:?}",
            reached.outcomes
        );
    })
}
