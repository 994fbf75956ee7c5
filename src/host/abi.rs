//! Every call the filter makes into the host, and the only module that makes them.
//!
//! proxy-wasm 0.2.5's `hostcalls` panic on any status they do not expect and unwrap UTF-8
//! decoding of header maps: one request header byte in 0x80-0xFF trapped the VM for good.
//! Here each import returns its status as a `Result`, and data comes back as bytes (header
//! maps through the core's `header_map`, which never traps). `make lint` keeps the rest of
//! the filter off the SDK's calls (`clippy.toml`'s `disallowed-methods`).

use std::ptr::null_mut;
use std::time::Duration;

use proxy_wasm::types::{BufferType, MapType, MetricType, Status};

use crate::http::{header_map, LocalReply};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name: *const u8,
        function_name_size: usize,
        arguments: *const u8,
        arguments_size: usize,
        return_results: *mut *mut u8,
        return_results_size: *mut usize,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
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

/// The ABI's status codes; anything unknown is the host's failure, not a reason to trap.
fn status(code: u32) -> Result<(), Status> {
    match code {
        0 => Ok(()),
        1 => Err(Status::NotFound),
        2 => Err(Status::BadArgument),
        3 => Err(Status::SerializationFailure),
        4 => Err(Status::ParseFailure),
        7 => Err(Status::Empty),
        8 => Err(Status::CasMismatch),
        _ => Err(Status::InternalFailure),
    }
}

/// A buffer the host allocated in this VM (through the SDK's `proxy_on_memory_allocate`)
/// and handed over; `None` for none at all.
///
/// SAFETY: `data`/`size` must be what the host returned from a successful call.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    (!data.is_null()).then(|| unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Calls an import that returns a host-allocated buffer; `NotFound` is `None`.
fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match status(call(&mut data, &mut size)) {
        // SAFETY: the call succeeded, so data and size describe the host's allocation.
        Ok(()) => Ok(unsafe { owned(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn log(level: log::Level, message: &str) {
    // proxy-wasm log levels: trace 0 .. error 4.
    let level = match level {
        log::Level::Trace => 0,
        log::Level::Debug => 1,
        log::Level::Info => 2,
        log::Level::Warn => 3,
        log::Level::Error => 4,
    };
    // SAFETY: the message outlives the call. A log line that cannot be written is dropped.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The `log` facade's backend, and the panic hook: neither unwraps a host call (the SDK's
/// logger does).
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            log(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_logging(level: log::LevelFilter) {
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|info| {
            // Critical (5): the VM is about to trap.
            let line = info.to_string();
            // SAFETY: the line outlives the call.
            let _ = unsafe { proxy_log(5, line.as_ptr(), line.len()) };
        }));
    }
    log::set_max_level(level);
}

/// Milliseconds since the Unix epoch (0 if the host cannot say).
pub fn now_ms() -> u64 {
    let mut nanos = 0u64;
    // SAFETY: nanos outlives the call.
    match status(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) }) {
        Ok(()) => nanos / 1_000_000,
        Err(_) => 0,
    }
}

pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn buffer(kind: BufferType, start: usize, max: usize) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-pointers are valid for the call.
    returned(|data, size| unsafe { proxy_get_buffer_bytes(kind as u32, start, max, data, size) })
}

/// Every header of a map, values decoded as `header_map` describes.
pub fn headers(map: MapType) -> Result<Vec<(String, String)>, Status> {
    // SAFETY: the out-pointers are valid for the call.
    let raw = returned(|data, size| unsafe { proxy_get_header_map_pairs(map as u32, data, size) })?;
    match raw {
        Some(bytes) => header_map::decode(&bytes).ok_or(Status::SerializationFailure),
        None => Ok(Vec::new()),
    }
}

/// One header's value, as text (see `header_map::text`).
pub fn header(map: MapType, name: &str) -> Result<Option<String>, Status> {
    // SAFETY: name and the out-pointers are valid for the call.
    let raw = returned(|data, size| unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size)
    })?;
    Ok(raw.map(|b| header_map::text(&b)))
}

pub fn set_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: name and value outlive the call.
    status(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn add_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: name and value outlive the call.
    status(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: MapType, name: &str) -> Result<(), Status> {
    // SAFETY: name outlives the call.
    status(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A property (`source.address`, `xds.node.metadata.NAMESPACE`) as the host serializes it.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    // The ABI's path: the segments joined by NUL.
    let serialized = path.join("\0");
    // SAFETY: the path and the out-pointers are valid for the call.
    returned(|data, size| unsafe {
        proxy_get_property(serialized.as_ptr(), serialized.len(), data, size)
    })
}

/// A VM-wide shared value and its compare-and-swap stamp.
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: key and the out-pointers are valid for the call.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status(code) {
        // SAFETY: the call succeeded, so data and size describe the host's allocation.
        Ok(()) => Ok((unsafe { owned(data, size) }, (cas != 0).then_some(cas))),
        Err(Status::NotFound) => Ok((None, None)),
        Err(e) => Err(e),
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: key and value outlive the call.
    status(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

pub fn resume_http_request() -> Result<(), Status> {
    // SAFETY: no pointers. Stream type 0 is the HTTP request.
    status(unsafe { proxy_continue_stream(0) })
}

pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// Starts an HTTP call; the answer arrives in the root context's `on_http_call_response`.
/// The SDK's call is used because its dispatcher must register the token to route that
/// answer; it returns every status Envoy's `proxy_http_call` gives (Ok, BadArgument,
/// InternalFailure) as a `Result`.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<u32, Status> {
    #[allow(clippy::disallowed_methods)]
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers.to_vec(), None, vec![], timeout)
}

/// One of the host's foreign functions (`NotFound`: the host has none of that name), with
/// what it returned. The SDK's call traps on a status it does not expect.
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: name, arguments and the out-pointers are valid for the call.
    let code = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    };
    status(code)?;
    // SAFETY: the call succeeded, so data and size describe the host's allocation.
    Ok(unsafe { owned(data, size) })
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: name and id outlive the call.
    status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, delta: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_increment_metric(id, delta) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_record_metric(id, value) })
}

/// The filter's own response (abort, 403, redirect...), with its gRPC status when it has one:
/// the SDK's wrappers either drop that argument or panic on a host error.
pub fn send_local_reply(r: &LocalReply) -> Result<(), Status> {
    let headers = header_map::encode(&r.headers);
    let grpc_status = r.grpc_status.map_or(-1, |c| c as i32);
    // SAFETY: every pointer and size describes a buffer that outlives the call.
    status(unsafe {
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
    })
}
