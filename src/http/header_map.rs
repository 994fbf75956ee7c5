//! The proxy-wasm ABI's serialized header map, read and written without trusting it.
//!
//! Layout: a little-endian `u32` count, a `(u32 name length, u32 value length)` pair per
//! entry, then each name and value followed by a NUL byte.
//!
//! Envoy's HTTP/1 codec passes header bytes 0x80-0xFF through (RFC 9110 obs-text), so a value
//! need not be UTF-8. The rules compare text, so such a value is decoded lossily: every
//! invalid sequence becomes U+FFFD. An exact, prefix, suffix or contains match against rule
//! text (always valid UTF-8) then decides as Envoy's byte comparison does, because the
//! decoder never swallows a valid character; the one difference is a rule that itself spells
//! U+FFFD. The SDK's reader instead unwraps `String::from_utf8` and traps the VM.

/// Decodes a serialized map. `None` when the buffer is shorter than its own sizes say.
pub fn decode(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)? as usize;
    let sizes_end = count.checked_mul(8)?.checked_add(4)?;
    if sizes_end > bytes.len() {
        return None;
    }
    let mut map = Vec::with_capacity(count);
    let mut at = sizes_end;
    for n in 0..count {
        let name_len = read_u32(bytes, 4 + n * 8)? as usize;
        let value_len = read_u32(bytes, 8 + n * 8)? as usize;
        let name = text(take(bytes, &mut at, name_len)?);
        let value = text(take(bytes, &mut at, value_len)?);
        map.push((name, value));
    }
    Some(map)
}

/// Serializes pairs for the host (local reply headers, HTTP call headers).
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.as_ref().len() + v.as_ref().len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
    out
}

/// Bytes as text: U+FFFD for each invalid UTF-8 sequence.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The next `len` bytes at `at`, skipping the NUL that ends them.
fn take<'b>(bytes: &'b [u8], at: &mut usize, len: usize) -> Option<&'b [u8]> {
    let end = at.checked_add(len)?;
    let out = bytes.get(*at..end)?;
    *at = end.checked_add(1)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[test]
    fn round_trips_what_it_encodes() {
        let pairs = [(":path", "/a?b=c"), ("x-h", ""), ("cookie", "a=1; b=2")];
        let decoded = decode(&encode(&pairs)).unwrap();
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(decode(&[]), Some(Vec::new()));
    }

    #[test]
    fn obs_text_header_values_decode_without_trapping() {
        // `User-Agent: caf\xe9`, the value that trapped proxy-wasm 0.2.5's get_map.
        let map = decode(&raw(&[
            (b"user-agent", b"caf\xe9"),
            (b"cookie", b"user=\xff"),
        ]))
        .unwrap();
        assert_eq!(map[0].1, "caf\u{fffd}");
        assert_eq!(map[1].1, "user=\u{fffd}");
    }

    #[test]
    fn lossy_text_keeps_every_valid_character_around_invalid_bytes() {
        // A lead byte without its continuation never eats the next valid character.
        assert_eq!(text(b"\xf0\xe2\x82\xac"), "\u{fffd}\u{20ac}");
        assert_eq!(text(b"adm\xffin"), "adm\u{fffd}in");
        assert_eq!(text("café".as_bytes()), "café");
    }

    #[test]
    fn truncated_or_oversized_maps_are_refused() {
        let good = raw(&[(b"a", b"b")]);
        // The final NUL is not needed to read the last value.
        for cut in 1..good.len() - 1 {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge_count), None);
        let mut huge_len = good;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge_len), None);
    }
}
