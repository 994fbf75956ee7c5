//! Sending the filter's own responses through the ABI's `proxy_send_local_response`.
//! The SDK's wrappers either drop the gRPC status argument or panic on a host error.

use proxy_wasm::types::Status;

use crate::engine::LocalReply;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// Serializes headers as the ABI expects: the count, every size pair, then NUL-ended bytes.
fn serialize_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

pub fn send(r: &LocalReply) -> Result<(), Status> {
    let headers = serialize_pairs(&r.headers);
    let grpc_status = r.grpc_status.map_or(-1, |c| c as i32);
    // SAFETY: every pointer and size describes a buffer that outlives the call.
    let status = unsafe {
        proxy_send_local_response(
            r.status,
            r.details.as_ptr(),
            r.details.len(),
            r.body.as_ptr(),
            r.body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    };
    match status {
        0 => Ok(()),
        _ => Err(Status::InternalFailure),
    }
}
