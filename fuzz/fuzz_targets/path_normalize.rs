//! Arbitrary `:path` bytes (read as the host reads header values, lossily as UTF-8) through
//! authorization's path normalization in each `escapedSlashes` mode, with the properties
//! AuthorizationPolicy matching relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrules::authz::path::{normalize, EscapedSlashes};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    let (raw_path, raw_query) = raw.split_at(raw.find('?').unwrap_or(raw.len()));
    for mode in [
        EscapedSlashes::Reject,
        EscapedSlashes::Keep,
        EscapedSlashes::Unescape,
    ] {
        let Ok(n) = normalize(raw, mode) else {
            continue;
        };
        let path: &str = &n.path;
        assert_eq!(
            n.query, raw_query,
            "{raw:?} {mode:?}: the query is kept as sent"
        );
        assert_eq!(
            n.changed(),
            path != raw_path,
            "{raw:?} {mode:?}: changed() says whether :path must be rewritten"
        );
        assert!(path.starts_with('/'), "{raw:?} {mode:?} -> {path:?}");
        // Envoy's normalize_path + merge_slashes: no empty or dot segments survive.
        assert!(!path.contains("//"), "{raw:?} {mode:?} -> {path:?}");
        for bad in ["/../", "/./"] {
            assert!(!path.contains(bad), "{raw:?} {mode:?} -> {path:?}");
        }
        assert!(
            !path.ends_with("/..") && !path.ends_with("/."),
            "{raw:?} {mode:?} -> {path:?}"
        );
        // Printable ASCII only: raw UTF-8 is escaped, controls, `\`, `;` and `#` never pass.
        assert!(
            path.bytes()
                .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'\\' | b';' | b'#')),
            "{raw:?} {mode:?} -> {path:?}"
        );
        // Normalizing a normalized path is a no-op.
        let again = format!("{path}{}", n.query);
        match normalize(&again, mode) {
            Ok(m) => {
                assert_eq!(m.path, n.path, "{raw:?} {mode:?}: not idempotent");
                assert!(!m.changed(), "{raw:?} {mode:?}: {again:?} changed again");
            }
            Err(e) => panic!("{raw:?} {mode:?}: normalized {again:?} is refused: {e:?}"),
        }
    }
});
