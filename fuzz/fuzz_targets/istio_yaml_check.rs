//! Arbitrary bytes as a file given to `meshrules check`: the CLI's own input reader
//! (`src/bin/meshrules/input.rs`, compiled here unchanged), YAML documents or JSON, merged into
//! one pluginConfig and validated by the filter's `compile::load`, problems located per file.
//!
//! The reader's public entry point reads named files, so each input is written to a scratch
//! file of the fuzzing process, removed again after each run; in /dev/shm when there is one
//! (on disk, the write costs a thousand times more than the check).
#![no_main]

#[allow(dead_code)]
#[path = "../../src/bin/meshrules/input.rs"]
mod input;

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let file = dir.join(format!("meshrules-fuzz-{}.yaml", std::process::id()));
        file.to_string_lossy().into_owned()
    })
}

fuzz_target!(|data: &[u8]| {
    let file = scratch();
    std::fs::write(file, data).unwrap();
    let inputs = input::Inputs::read(&[file.to_owned()]);
    std::fs::remove_file(file).unwrap();
    assert_eq!(inputs.files, 1);
    // What `check` prints on success, or each located problem on failure.
    let _ = inputs.config_json();
    match inputs.validate() {
        Ok(v) => {
            let kinds = v.inputs.kinds();
            let total: usize = kinds.values().sum();
            let listed = v.inputs.config["resources"].as_array().map_or(0, Vec::len);
            assert_eq!(total, listed);
            for w in &v.warnings {
                let _ = w.to_string();
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in &problems {
                assert!(!p.to_string().is_empty());
            }
        }
    }
});
