//! Request path normalization for authorization matching.
//!
//! AuthorizationPolicy `paths` are only as strong as the path they are compared with: a DENY
//! on `/admin` must also catch `/a/../admin`, `//admin`, `/%61dmin` and the rest, and a path
//! that an upstream could read differently from us is refused rather than guessed at.
//!
//! Modelled on what Istio asks of Envoy's HTTP connection manager with
//! `pathNormalization: MERGE_SLASHES` (see `ConnectionManagerUtility::maybeNormalizePath` in
//! envoyproxy/envoy `source/common/http/conn_manager_utility.cc`):
//!
//! 1. a `#` anywhere is refused (`envoy.reloadable_features.http_reject_path_with_fragment`);
//! 2. `%2F`/`%5C` per `path_with_escaped_slashes_action` (`PathUtil::unescapeSlashes`);
//! 3. `normalize_path` (`PathUtil::canonicalPath`, Chromium's `CanonicalizePath`): unreserved
//!    escapes decoded, `\` read as `/`, `.`/`..` segments removed (RFC 3986 5.2.4), invalid
//!    escapes and `%00` refused, raw non-ASCII percent-encoded;
//! 4. `merge_slashes` (`PathUtil::mergeSlashes`), after the dot segments as Envoy does it.
//!
//! Stricter than Envoy, on purpose: a `;` path parameter is refused (Tomcat and Spring strip
//! `;...` from segments, Envoy does not, so `/admin;x=1` would reach `/admin` past a DENY), and
//! the hex of every kept escape is upper-cased (RFC 3986 6.2.2.1) so that `%2f` and `%2F` are
//! one spelling for the matchers.

use std::borrow::Cow;

/// `security.escapedSlashes`: what `%2F` and `%5C` (either case) in the path get.
/// Envoy's `path_with_escaped_slashes_action` REJECT_REQUEST / KEEP_UNCHANGED /
/// UNESCAPE_AND_FORWARD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Refused (400): `/admin%2Fx` is `/admin/x` to some servers and one segment to others.
    Reject,
    /// Kept encoded: the path is matched, and forwarded, as one segment `admin%2Fx`.
    Keep,
    /// Decoded to `/` (and `%5C` to `\`, then `/`) before normalization.
    Unescape,
}

/// Why a path was refused (400). Each is a spelling that could be read two ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathRejection {
    /// A `#` in the `:path`: fragments are never sent, so someone is being clever.
    Fragment,
    /// The path does not start with `/` (e.g. `*` or `admin`).
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%00`: C-string upstreams stop reading there.
    EncodedNul,
    /// `%2F` or `%5C` with `escapedSlashes: REJECT`.
    EscapedSlash,
    /// A `;` path parameter (`/admin;jsessionid=1`), which Java servers strip.
    PathParameter,
    /// A raw control character (0x00-0x1F, 0x7F); Envoy's codecs never pass one, this guards
    /// against a host that does.
    ControlCharacter,
}

impl PathRejection {
    /// Short text for the 400 body and the log.
    pub fn detail(&self) -> &'static str {
        match self {
            PathRejection::Fragment => "fragment (#) in path",
            PathRejection::NotAbsolute => "path does not start with /",
            PathRejection::BadEscape => "invalid percent-encoding in path",
            PathRejection::EncodedNul => "encoded NUL (%00) in path",
            PathRejection::EscapedSlash => "escaped slash (%2F or %5C) in path",
            PathRejection::PathParameter => "path parameter (;) in path",
            PathRejection::ControlCharacter => "control character in path",
        }
    }
}

/// The request path as authorization sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    /// Normalized, without the query. Borrowed from the raw path when already normal.
    pub path: Cow<'a, str>,
    /// The query with its leading `?`, exactly as received (empty when there is none).
    pub query: &'a str,
}

impl NormalizedPath<'_> {
    /// Whether the path differs from the raw path part, i.e. `:path` must be rewritten so the
    /// upstream serves what was authorized. `normalize` only returns an owned path when it
    /// differs.
    pub fn changed(&self) -> bool {
        matches!(self.path, Cow::Owned(_))
    }
}

/// Normalizes `raw`, the `:path` header as received (may carry `?query`). Returns the path
/// without the query, and the query (with its `?`) separately, borrowing when nothing changed.
pub fn normalize(raw: &str, escaped: EscapedSlashes) -> Result<NormalizedPath<'_>, PathRejection> {
    // Envoy looks for '#' in the whole :path, query included (maybeNormalizePath).
    if raw.as_bytes().contains(&b'#') {
        return Err(PathRejection::Fragment);
    }
    let (path, query) = match raw.find('?') {
        Some(q) => raw.split_at(q),
        None => (raw, ""),
    };
    if !path.starts_with('/') {
        return Err(PathRejection::NotAbsolute);
    }
    if is_normal(path.as_bytes()) {
        return Ok(NormalizedPath {
            path: Cow::Borrowed(path),
            query,
        });
    }
    let decoded = decode(path, escaped)?;
    let normalized = merge_slashes(remove_dot_segments(&decoded));
    // A slow-path path can still come out as it went in (e.g. `/a%2Fb` with KEEP).
    let path = if normalized == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalized)
    };
    Ok(NormalizedPath { path, query })
}

/// The common case, one pass and no allocation: nothing to decode, refuse or remove.
/// `path` starts with '/'. A `false` only means "take the careful path".
fn is_normal(path: &[u8]) -> bool {
    let mut segment_start = 1;
    for (i, &c) in path.iter().enumerate().skip(1) {
        if c == b'/' {
            // An empty segment ("//") or a dot segment ends here.
            if matches!(path.get(segment_start..i), Some(b"" | b"." | b"..")) {
                return false;
            }
            segment_start = i + 1;
        } else if NEEDS_CARE[usize::from(c)] {
            return false;
        }
    }
    // The last segment; empty is a trailing slash (or the root), which is normal.
    !matches!(path.get(segment_start..), Some(b"." | b".."))
}

/// Bytes a normal path never holds: escapes, separators read two ways, path parameters,
/// control characters and raw non-ASCII.
static NEEDS_CARE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20
            || b >= 0x7f
            || b == b'%' as usize
            || b == b'\\' as usize
            || b == b';' as usize;
        b += 1;
    }
    table
};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0f)]));
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Percent-decoding and character checks, before the segments are looked at (Envoy, too,
/// unescapes slashes and decodes `%2E` before it removes dot segments). The result is ASCII.
fn decode(path: &str, escaped: EscapedSlashes) -> Result<String, PathRejection> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len() + 8);
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathRejection::BadEscape);
                };
                let byte = hi << 4 | lo;
                match byte {
                    0 => return Err(PathRejection::EncodedNul),
                    b'/' | b'\\' => match escaped {
                        EscapedSlashes::Reject => return Err(PathRejection::EscapedSlash),
                        EscapedSlashes::Keep => push_escape(&mut out, byte),
                        // `%5C` becomes `\`, which canonicalPath then reads as `/`.
                        EscapedSlashes::Unescape => out.push('/'),
                    },
                    b if is_unreserved(b) => out.push(char::from(b)),
                    b => push_escape(&mut out, b),
                }
                i += 3;
                continue;
            }
            // Chromium's canonicalizer (Envoy's canonicalPath) treats '\' as a separator.
            b'\\' => out.push('/'),
            b';' => return Err(PathRejection::PathParameter),
            0x00..=0x1f | 0x7f => return Err(PathRejection::ControlCharacter),
            // Raw UTF-8 is escaped as Chromium's canonicalizer does, so `/é` and `/%C3%A9`
            // are one spelling.
            0x80..=0xff => push_escape(&mut out, c),
            _ => out.push(char::from(c)),
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 5.2.4 on an absolute path: `.` segments dropped, `..` drops the segment before
/// it (an empty one too, as in `/a//../b` -> `/a/b`), never above the root. A final `.` or
/// `..` leaves a trailing slash (`/a/b/..` -> `/a/`).
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut segments = path.get(1..).unwrap_or_default().split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                if let Some(cut) = out.rfind('/') {
                    out.truncate(cut);
                }
            }
            _ => {
                out.push('/');
                out.push_str(segment);
                continue;
            }
        }
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Envoy's `mergeSlashes`, run after dot segments as `maybeNormalizePath` does: every run of
/// slashes becomes one; a trailing slash is kept.
fn merge_slashes(path: String) -> String {
    if !path.contains("//") {
        return path;
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use EscapedSlashes::{Keep, Reject, Unescape};
    use PathRejection::*;

    /// `(raw, mode, expected path or rejection)`.
    type Row = (
        &'static str,
        EscapedSlashes,
        Result<&'static str, PathRejection>,
    );

    fn check(rows: &[Row]) {
        for (raw, mode, want) in rows {
            let got = normalize(raw, *mode).map(|n| n.path.into_owned());
            let want = want.map(str::to_string);
            assert_eq!(got, want, "normalize({raw:?}, {mode:?})");
        }
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for raw in [
            "/",
            "/admin",
            "/admin/",
            "/ADMIN",
            "/a/b/c",
            "/a.b/c..d/.e/f.",
            "/...",
            "/a-b_c~d",
            "/api/v1/items:batchGet",
            "/a*b/{id}/@x+y,z=w!$&'()",
        ] {
            let n = normalize(raw, Reject).unwrap();
            assert!(
                matches!(n.path, Cow::Borrowed(p) if p == raw),
                "{raw:?} -> {n:?}"
            );
            assert!(!n.changed(), "{raw:?}");
            assert_eq!(n.query, "");
        }
    }

    /// Spellings of `/admin` an AuthorizationPolicy DENY on `/admin` or `/admin/*` must
    /// catch, and spellings that must not become `/admin`.
    #[test]
    fn attack_spellings_normalize_to_one_path_or_are_refused() {
        check(&[
            ("/admin", Reject, Ok("/admin")),
            ("/admin/", Reject, Ok("/admin/")), // trailing slash kept
            ("/admin/x", Reject, Ok("/admin/x")),
            ("/a/../admin", Reject, Ok("/admin")),
            ("/./admin", Reject, Ok("/admin")),
            ("//admin", Reject, Ok("/admin")),
            ("///admin//x//", Reject, Ok("/admin/x/")),
            ("/%61dmin", Reject, Ok("/admin")),
            ("/%61%64%6D%69%6e", Reject, Ok("/admin")),
            ("/%2e%2e/admin", Reject, Ok("/admin")),
            ("/a/%2E%2E/admin", Reject, Ok("/admin")),
            ("/a/.%2E/admin", Reject, Ok("/admin")),
            ("/a/%2e./admin", Reject, Ok("/admin")),
            ("/a/%2e/admin", Reject, Ok("/a/admin")),
            ("/admin\\x", Reject, Ok("/admin/x")),
            ("\\admin", Reject, Err(NotAbsolute)), // '\' is read as '/' only inside a path
            ("/a\\..\\admin", Reject, Ok("/admin")),
            ("/admin;jsessionid=1", Reject, Err(PathParameter)),
            ("/admin/;x", Reject, Err(PathParameter)),
            ("/admin/..;/x", Reject, Err(PathParameter)),
            ("/admin#frag", Reject, Err(Fragment)),
            ("/admin?x=1#frag", Reject, Err(Fragment)),
            ("/ADMIN", Reject, Ok("/ADMIN")), // paths are case-sensitive
            ("/Admin", Reject, Ok("/Admin")),
        ]);
    }

    #[test]
    fn escaped_slashes_follow_the_configured_action() {
        check(&[
            ("/admin%2Fx", Reject, Err(EscapedSlash)),
            ("/admin%2fx", Reject, Err(EscapedSlash)),
            ("/admin%5Cx", Reject, Err(EscapedSlash)),
            ("/admin%5cx", Reject, Err(EscapedSlash)),
            ("/admin%2Fx", Keep, Ok("/admin%2Fx")),
            ("/admin%2fx", Keep, Ok("/admin%2Fx")), // one spelling for the matchers
            ("/admin%5cx", Keep, Ok("/admin%5Cx")),
            ("/a/..%2Fadmin", Keep, Ok("/a/..%2Fadmin")), // not a dot segment when kept
            ("/admin%2Fx", Unescape, Ok("/admin/x")),
            ("/admin%2fx", Unescape, Ok("/admin/x")),
            ("/admin%5Cx", Unescape, Ok("/admin/x")), // `\` then `/`, as canonicalPath reads it
            ("/admin%5cx", Unescape, Ok("/admin/x")),
            ("/a%2F..%2Fadmin", Unescape, Ok("/admin")), // unescaped before dot segments
            ("/%2F%2Fadmin", Unescape, Ok("/admin")),    // and before merging
            // Envoy's UnescapeSlashes test: "/x/%2E%2e/z%2f%2Fabc%5C../def"
            ("/x/%2E%2e/z%2f%2Fabc%5C../def", Unescape, Ok("/z/def")),
        ]);
    }

    #[test]
    fn dot_segments_follow_rfc3986_and_stop_at_the_root() {
        check(&[
            // Envoy's PathUtilityTest.NormalizeValidPaths
            ("/a/b/../c", Reject, Ok("/a/c")),
            ("/a/b/./c", Reject, Ok("/a/b/c")),
            ("/a/b/../../../../c", Reject, Ok("/c")),
            ("/a/..\\c", Reject, Ok("/c")),
            ("/a/b/%2E%2E/c", Reject, Ok("/a/c")),
            // RFC 3986 5.2.4: a final dot segment leaves a trailing slash
            ("/a/b/..", Reject, Ok("/a/")),
            ("/a/b/.", Reject, Ok("/a/b/")),
            ("/..", Reject, Ok("/")),
            ("/../..", Reject, Ok("/")),
            ("/.", Reject, Ok("/")),
            ("/a/..", Reject, Ok("/")),
            ("//", Reject, Ok("/")),
            // Dot segments before merging slashes (maybeNormalizePath), so `..` takes the
            // empty segment: the upstream is sent exactly this, so it cannot read it otherwise.
            ("/a//../b", Reject, Ok("/a/b")),
            // Not dot segments
            ("/a/.../b", Reject, Ok("/a/.../b")),
            ("/a/..b/.c", Reject, Ok("/a/..b/.c")),
        ]);
    }

    #[test]
    fn escapes_are_decoded_only_when_unreserved_and_otherwise_uppercased() {
        check(&[
            ("/%7Euser/%2D%5F%2E%30", Reject, Ok("/~user/-_.0")),
            ("/%C3%A9", Reject, Ok("/%C3%A9")), // UTF-8 stays encoded
            ("/%c3%a9", Reject, Ok("/%C3%A9")),
            ("/%c0%af", Reject, Ok("/%C0%AF")), // overlong '/' is not a slash
            ("/caf\u{e9}", Reject, Ok("/caf%C3%A9")), // raw UTF-8 escaped as Chromium does
            ("/a%20b", Reject, Ok("/a%20b")),
            ("/a%3bb", Reject, Ok("/a%3Bb")), // an encoded ';' is not a parameter
            ("/a%3Fb%23c", Reject, Ok("/a%3Fb%23c")),
            ("/%252e%252e/admin", Reject, Ok("/%252e%252e/admin")), // decoded once only
            ("/%25", Reject, Ok("/%25")),
        ]);
    }

    #[test]
    fn broken_escapes_nul_and_control_characters_are_refused() {
        check(&[
            ("/%zz", Reject, Err(BadEscape)),
            ("/%", Reject, Err(BadEscape)),
            ("/%4", Reject, Err(BadEscape)),
            ("/a%4?x", Reject, Err(BadEscape)),
            ("/%g0", Reject, Err(BadEscape)),
            ("/%%41", Reject, Err(BadEscape)),
            ("/%00", Reject, Err(EncodedNul)),
            // Envoy's PathUtilityTest.InvalidPaths
            ("/xyz/.%00../abc", Keep, Err(EncodedNul)),
            ("/xyz/%00.%00./abc", Keep, Err(EncodedNul)),
            ("/xyz/AAAAA%%0000/abc", Keep, Err(BadEscape)),
            ("/a\0b", Reject, Err(ControlCharacter)),
            ("/a\tb", Reject, Err(ControlCharacter)),
            ("/a\x7fb", Reject, Err(ControlCharacter)),
        ]);
    }

    #[test]
    fn paths_not_starting_with_a_slash_are_refused() {
        check(&[
            ("*", Reject, Err(NotAbsolute)),
            ("admin", Reject, Err(NotAbsolute)),
            ("", Reject, Err(NotAbsolute)),
            ("?x=1", Reject, Err(NotAbsolute)),
            ("http://example.com/admin", Reject, Err(NotAbsolute)),
        ]);
    }

    #[test]
    fn query_is_split_off_untouched() {
        let n = normalize("/admin?x=/../y", Reject).unwrap();
        assert_eq!(n.path, "/admin");
        assert_eq!(n.query, "?x=/../y");
        assert!(!n.changed());

        let n = normalize("/a/../admin?%2F=%zz;&q=a//b", Reject).unwrap();
        assert_eq!(n.path, "/admin");
        assert_eq!(n.query, "?%2F=%zz;&q=a//b");
        assert!(n.changed());

        let n = normalize("/admin?", Reject).unwrap();
        assert_eq!((n.path.as_ref(), n.query), ("/admin", "?"));

        // Split at the first '?' (Envoy's mergeSlashes test: "/a//b?a=///c").
        let n = normalize("/a//b?a=///c?d", Reject).unwrap();
        assert_eq!((n.path.as_ref(), n.query), ("/a/b", "?a=///c?d"));
    }

    #[test]
    fn changed_is_true_only_when_the_path_differs() {
        assert!(normalize("//admin", Reject).unwrap().changed());
        assert!(normalize("/%61dmin", Reject).unwrap().changed());
        assert!(normalize("/%c3%a9", Reject).unwrap().changed());
        // Slow path taken (an escape to look at), same text out: still borrowed.
        let kept = normalize("/admin%2Fx", Keep).unwrap();
        assert!(!kept.changed());
        assert!(matches!(kept.path, Cow::Borrowed(_)));
        assert!(!normalize("/%C3%A9", Reject).unwrap().changed());
    }

    #[test]
    fn normalizing_is_idempotent() {
        for raw in [
            "/a/../admin",
            "//x//y/./z/..",
            "/%61/%2e%2e/%c3%a9",
            "/caf\u{e9}/",
            "/a%2fb%5C..",
            "/a\\b",
        ] {
            for mode in [Keep, Unescape] {
                let once = normalize(raw, mode).unwrap().path.into_owned();
                let twice = normalize(&once, mode).unwrap();
                assert_eq!(twice.path, once, "{raw:?} {mode:?}");
                assert!(!twice.changed(), "{raw:?} {mode:?}");
            }
        }
    }

    #[test]
    fn every_rejection_has_a_detail() {
        for r in [
            Fragment,
            NotAbsolute,
            BadEscape,
            EncodedNul,
            EscapedSlash,
            PathParameter,
            ControlCharacter,
        ] {
            assert!(!r.detail().is_empty());
        }
    }
}
