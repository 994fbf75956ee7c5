//! JSON as Envoy's jwt_authn reads token headers, payloads and key sets: protobuf's
//! `JsonStringToMessage` into a `Struct` (Envoy 1.40), which takes standard JSON plus one
//! comma after the last member of an object or the last element of an array
//! (`{"keys":[{...},]}`), and refuses two members with one name (`{"alg":"none","alg":"RS256"}`
//! is `Jwt header is an invalid JSON`): a parser differential there is where token confusion
//! starts. Anything else that is not JSON is refused, with serde_json's line and column.

use serde_json::Value;

/// The trailing commas are blanked (same length, so positions stay true) before the text is
/// read by the configuration's own duplicate-refusing reader.
pub(super) fn protobuf_json(json: &[u8]) -> Result<Value, serde_json::Error> {
    let mut bytes = json.to_vec();
    let mut in_string = false;
    let mut escaped = false;
    // The last byte outside strings and whitespace, and where a pending comma is.
    let mut last = 0u8;
    let mut comma_after_value = None;
    for i in 0..bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        if let Some(at) = comma_after_value.take() {
            if matches!(b, b']' | b'}') {
                bytes[at] = b' ';
            }
        }
        if b == b',' && !matches!(last, 0 | b'[' | b'{' | b',' | b':') {
            comma_after_value = Some(i);
        }
        if b == b'"' {
            in_string = true;
        }
        last = b;
    }
    crate::config::json::read_unique(&bytes)
}
