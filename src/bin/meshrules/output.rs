//! Standard output and error that never panic: `println!` panics when a write fails
//! (`meshrules explain ... > /dev/full`). The first failed write to standard output is kept,
//! later ones are skipped, and `main` reports it as an error.

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

static FAILED: OnceLock<String> = OnceLock::new();

/// A line on standard output, like `println!`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// A line on standard error, like `eprintln!`; a failure there has nowhere to be reported.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::output::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub fn write(args: fmt::Arguments<'_>) {
    if FAILED.get().is_none() {
        if let Err(e) = io::stdout().lock().write_fmt(args) {
            let _ = FAILED.set(e.to_string());
        }
    }
}

pub fn write_err(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Flushes standard output; `Err` says why some output could not be written.
pub fn finish() -> Result<(), String> {
    if let Err(e) = io::stdout().lock().flush() {
        let _ = FAILED.set(e.to_string());
    }
    match FAILED.get() {
        Some(e) => Err(format!("cannot write output: {e}")),
        None => Ok(()),
    }
}
