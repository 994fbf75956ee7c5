//! Where loading a large configuration spends its time and memory, natively (bench/load_profile.md):
//! `cargo run --release --example load_profile -- 1000` loads 1,000 VirtualServices of 10
//! routes with their DestinationRules and prints the time and heap of each step. A counting
//! allocator measures the heap; `valgrind --tool=callgrind --toggle-collect=meshrules::compile::load`
//! on the same binary gives instruction counts that do not depend on the machine's load.

// A profiling tool: a refused configuration must stop it loudly.
#![allow(clippy::panic, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

#[path = "../benches/support/virtual_services.rs"]
mod virtual_services;

use meshrules::compile::{load, Anonymous};
use serde_json::{json, Value};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = NOW.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            grew(new - l.size());
        } else {
            NOW.fetch_sub(l.size() - new, Relaxed);
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `step`, printing its time, the heap it leaves and the heap it peaked at.
fn measure<T>(what: &str, step: impl FnOnce() -> T) -> T {
    let base = NOW.load(Relaxed);
    PEAK.store(base, Relaxed);
    let start = Instant::now();
    let out = step();
    let mib = |b: usize| (b.saturating_sub(base)) as f64 / 1048576.0;
    println!(
        "{what}: {:?}, heap left {:.1} MiB, peak {:.1} MiB",
        start.elapsed(),
        mib(NOW.load(Relaxed)),
        mib(PEAK.load(Relaxed))
    );
    out
}

fn config(n: usize) -> String {
    let resources: Vec<Value> = virtual_services::virtual_services(n, 10)
        .into_iter()
        .chain(virtual_services::destination_rules(n))
        .collect();
    json!({ "resources": resources }).to_string()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let text = config(n);
    println!(
        "{n} VirtualServices of 10 routes + {n} DestinationRules: {:.1} MiB of JSON",
        text.len() as f64 / 1048576.0
    );
    let tree = measure("JSON -> Value tree", || {
        meshrules::config::json::parse_unique(text.as_bytes())
    });
    drop(tree);
    let parsed = measure("JSON -> typed configuration", || {
        meshrules::config::parse(text.as_bytes(), &mut Default::default())
    });
    measure("drop typed configuration", || drop(parsed));
    let loaded = measure("load (parse + compile)", || {
        load(text.as_bytes(), &Anonymous)
    });
    match loaded {
        Ok(l) => println!("{} warnings", l.warnings.len()),
        Err(e) => panic!("refused: {:?}", &e[..e.len().min(3)]),
    }
}
