;; A deliberately broken proxy-wasm HTTP filter for the failure_policy tests: it marks every
;; request it sees (request header `x-trap-module: ran`) and traps (`unreachable`, a Wasm
;; runtime error) on a request carrying `x-trap`. Start-up succeeds, so Envoy loads it; the
;; failure happens at request time, the case Envoy's failure_policy governs.
;; Assembled by the tests with binaryen's wasm-as (proxy-wasm ABI 0.2.1).
(module
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)
  (data (i32.const 0) "x-trap")
  (data (i32.const 16) "x-trap-module")
  (data (i32.const 32) "ran")

  ;; Bump allocator for the host's copies of header values; they live only during one
  ;; callback, so each request-headers callback starts the heap afresh.
  (global $heap (mut i32) (i32.const 1024))

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7))
                               (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.sub (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1))
                                        (memory.size))))))
    (local.get $ptr))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  ;; map type 0 = request headers; WasmResult 0 = Ok (header present); action 0 = Continue.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 1024))
    (drop (call $add_header (i32.const 0) (i32.const 16) (i32.const 13) (i32.const 32) (i32.const 3)))
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 64) (i32.const 72)))
      (then (unreachable)))
    (i32.const 0)))
