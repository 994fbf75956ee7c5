//! The `meshrules` binary as a user runs it: check, bundle and explain on real files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use assert_cmd::Command;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const DEMO: &str = "examples/demoapp.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary in the repository (so relative paths like the demo's work).
fn meshrules(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("meshrules")
        .expect("binary built")
        .current_dir(repo())
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A temporary file with `text`, removed when the test ends.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        // Tests run in parallel: each file gets its own directory.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("meshrules-cli-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

// ------------------------------------------------------------------------------------------
// check
// ------------------------------------------------------------------------------------------

#[test]
fn check_accepts_the_demo_yaml_with_a_one_line_summary() {
    let (code, out, err) = meshrules(&["check", DEMO]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("ok: 1 file, 3 documents, 3 resources (1 AuthorizationPolicy, 1 DestinationRule, 1 VirtualService)"),
        "{out}"
    );
}

#[test]
fn check_accepts_plugin_config_json_as_the_filter_gets_it() {
    let (_, bundled, _) = meshrules(&["bundle", DEMO]);
    let json = TempFile::new("plugin-config.json", &bundled);
    let (code, out, err) = meshrules(&["check", json.path()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("ok: 1 file, 1 document, 3 resources"),
        "{out}"
    );
}

const BAD_YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: demoapp, namespace: app }
spec:
  host: demoapp
  subsets: [{ name: v1 }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: demoapp, namespace: app }
spec:
  hosts: [demoapp]
  http:
    - route: [{ destination: { host: demoapp, subset: v9 } }]
    - fault: { abort: { httpStatus: 700, percentage: { value: 10 } } }
      route: [{ destination: { host: demoapp } }]
    - match: [{ uri: { regex: "(" } }]
      timeout: 5 parsecs
      route: [{ destination: { host: demoapp } }]
    - mirror: { host: demoapp }
      route: [{ destination: { host: demoapp } }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: app }
spec: {}
"#;

#[test]
fn check_names_file_document_and_field_path_of_every_problem() {
    let bad = TempFile::new("bad.yaml", BAD_YAML);
    let json = TempFile::new(
        "bad.json",
        &json!({
            "resources": [{
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": "ext", "namespace": "app" },
                "spec": { "action": "CUSTOM" },
            }],
            "routing": { "clusterHeader": "" },
        })
        .to_string(),
    );
    let (code, out, err) = meshrules(&["check", bad.path(), json.path()]);
    assert_eq!(code, 1, "{out}{err}");
    let (y, j) = (bad.path(), json.path());
    for expected in [
        format!("{y}: document 2: spec.http[0].route[0].destination.subset: subset \"v9\" is not defined"),
        format!("{y}: document 2: spec.http[1].fault.abort.httpStatus: 700 is not in 200..=599"),
        format!("{y}: document 2: spec.http[2].match[0].uri.regex: bad regex \"(\""),
        format!("{y}: document 2: spec.http[2].timeout: \"5 parsecs\""),
        format!("{y}: document 2: spec.http[3].mirror:"),
        format!("{y}: document 3: kind: unknown kind \"Gateway\""),
        format!("{j}: document 1: routing.clusterHeader: must not be empty"),
        format!("{j}: document 1: resources[0].spec.action: CUSTOM"),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{out}"
        );
    }
    assert_eq!(out.lines().count(), 8, "one line per problem:\n{out}");
    assert!(err.contains("8 problems in 2 files"), "{err}");
}

#[test]
fn check_reports_syntax_errors_with_their_line_and_goes_on_to_other_files() {
    let broken = TempFile::new("broken.yaml", "kind: VirtualService\nspec: [\n");
    let json = TempFile::new("broken.json", "{\"resources\": [}");
    let (code, out, _) = meshrules(&[
        "check",
        broken.path(),
        json.path(),
        "no/such/file.yaml",
        DEMO,
    ]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!("{}: not valid YAML:", broken.path())),
        "{out}"
    );
    assert!(lines[0].contains("line 2"), "{out}");
    assert!(
        lines[1].starts_with(&format!("{}: resources[0]: not valid JSON:", json.path())),
        "{out}"
    );
    assert!(lines[1].contains("line 1 column 16"), "{out}");
    assert!(
        lines[2].starts_with("no/such/file.yaml: cannot read:"),
        "{out}"
    );
}

#[test]
fn check_refuses_documents_that_are_neither_istio_objects_nor_plugin_configs() {
    let odd = TempFile::new("odd.yaml", "hello: world\n---\n- a list\n");
    let (code, out, _) = meshrules(&["check", odd.path()]);
    assert_eq!(code, 1, "{out}");
    let p = odd.path();
    assert!(
        out.contains(&format!("{p}: document 1: kind: expected an Istio object")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{p}: document 2: expected an Istio object or a pluginConfig"
        )),
        "{out}"
    );
}

#[test]
fn check_reads_kubectl_lists_and_places_problems_inside_them() {
    let list = TempFile::new(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: networking.istio.io/v1\n    kind: VirtualService\n    metadata: { name: a, namespace: app }\n    spec:\n      hosts: [a]\n      http: [{ route: [{ destination: { host: a }, weight: -1 }] }]\n",
    );
    let (code, out, _) = meshrules(&["check", list.path()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "{}: document 1: items[0].spec.http[0].route[0].weight:",
            list.path()
        )),
        "{out}"
    );
}

// ------------------------------------------------------------------------------------------
// bundle
// ------------------------------------------------------------------------------------------

/// The filter configuration envoy/envoy.yaml carries.
fn demo_envoy_config() -> Value {
    let text = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let bootstrap = yaml(&text);
    let wasm = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0];
    serde_json::from_str(
        wasm["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn bundle_turns_the_demo_yaml_into_the_config_of_envoy_yaml() {
    let (code, out, err) = meshrules(&["bundle", DEMO]);
    assert_eq!(code, 0, "{err}");
    let bundled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(bundled, demo_envoy_config());
}

/// The metric name labels `bundle --output envoy` tells Envoy to extract are those the demo
/// bootstraps ship: one set of `stats_tags`, written once in the CLI.
#[test]
fn bundle_envoy_has_the_stats_tags_of_the_demo_bootstraps() {
    let (code, out, err) = meshrules(&["bundle", "--output", "envoy", DEMO]);
    assert_eq!(code, 0, "{err}");
    let tags = &yaml(&out)["stats_config"]["stats_tags"];
    assert!(tags.as_array().is_some_and(|t| t.len() >= 9), "{tags}");
    for file in [
        "envoy/envoy.yaml",
        "envoy/envoy-ecds.yaml",
        "envoy/compose/envoy.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        assert_eq!(&yaml(&text)["stats_config"]["stats_tags"], tags, "{file}");
    }
}

#[test]
fn bundle_refuses_an_invalid_config_and_prints_no_config() {
    let bad = TempFile::new("bad.yaml", BAD_YAML);
    let (code, out, err) = meshrules(&["bundle", "--output", "envoy", bad.path()]);
    assert_eq!(code, 1);
    assert!(!out.contains("static_resources"), "{out}");
    assert!(out.contains("700 is not in 200..=599"), "{out}");
    assert!(err.contains("problems"), "{err}");
}

#[test]
fn bundle_wasmplugin_carries_the_config_and_the_sha256_istio_checks() {
    let module = TempFile::new("module.wasm", "\0asm not really a module");
    let want_sha: String = Sha256::digest(std::fs::read(&module.0).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // An http(s):// module: Istio checks the module's own sha256.
    let (code, out, err) = meshrules(&[
        "bundle",
        "--output",
        "wasmplugin",
        "--wasm",
        module.path(),
        "--selector",
        "app=demoapp",
        "--image",
        "https://files.example/meshrules.wasm",
        DEMO,
    ]);
    assert_eq!(code, 0, "{err}");
    let wp = yaml(&out);
    assert_eq!(wp["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(wp["kind"], "WasmPlugin");
    assert_eq!(
        wp["metadata"],
        json!({ "name": "meshrules", "namespace": "app" })
    );
    let spec = &wp["spec"];
    assert_eq!(spec["url"], "https://files.example/meshrules.wasm");
    assert_eq!(spec["sha256"], want_sha.as_str());
    assert_eq!(spec["phase"], "AUTHN");
    assert_eq!(
        spec["selector"],
        json!({ "matchLabels": { "app": "demoapp" } })
    );
    assert_eq!(spec["type"], "HTTP");
    assert_eq!(spec["pluginName"], "meshrules");
    // Values Istio's WasmPlugin enums accept.
    assert!(
        ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"].contains(&spec["phase"].as_str().unwrap())
    );
    assert!(["FAIL_CLOSE", "FAIL_OPEN"].contains(&spec["failStrategy"].as_str().unwrap()));
    assert_eq!(spec["pluginConfig"], demo_envoy_config());

    // What it carries passes the filter's validation when read back.
    let file = TempFile::new("wasmplugin.yaml", &out);
    let (code, out, _) = meshrules(&["check", file.path()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn bundle_wasmplugin_for_an_oci_image_takes_the_manifest_digest_not_the_modules_sha256() {
    // Istio's agent compares an oci:// image's sha256 with its manifest digest.
    let (code, out, err) = meshrules(&[
        "bundle",
        "--output",
        "wasmplugin",
        "--image",
        "oci://r.example/m:1",
        DEMO,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(yaml(&out)["spec"].get("sha256").is_none(), "{out}");
    assert!(err.contains("manifest digest"), "{err}");
    let digest = "ab".repeat(32);
    let (code, out, err) = meshrules(&[
        "bundle",
        "--output",
        "wasmplugin",
        "--image",
        "oci://r.example/m:1",
        "--sha256",
        &digest,
        DEMO,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(yaml(&out)["spec"]["sha256"], digest.as_str());
}

#[test]
fn bundle_wasmplugin_refuses_a_malformed_sha256() {
    let (code, _, err) = meshrules(&["bundle", "--output", "wasmplugin", "--sha256", "abc", DEMO]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--sha256 \"abc\" is not 64 hex digits"),
        "{err}"
    );
}

#[test]
fn bundle_envoy_has_the_filter_the_cluster_header_routes_and_a_cluster_per_destination() {
    let (code, out, err) = meshrules(&[
        "bundle",
        "--output",
        "envoy",
        "--endpoint",
        "outbound|8080|v2|demoapp.app.svc.cluster.local=127.0.0.1:9",
        DEMO,
    ]);
    assert_eq!(code, 0, "{err}");
    let b = yaml(&out);
    let hcm =
        &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
    let config: Value =
        serde_json::from_str(wasm["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(config, demo_envoy_config());
    assert_eq!(
        wasm["vm_config"]["code"]["local"]["filename"],
        "wasm/meshrules.wasm"
    );
    assert_eq!(hcm["http_filters"][1]["name"], "envoy.filters.http.router");
    let routes = &hcm["route_config"]["virtual_hosts"][0]["routes"];
    assert_eq!(routes[0]["route"]["cluster_header"], "x-meshrules-cluster");
    assert_eq!(
        routes.as_array().unwrap().len(),
        1,
        "no passthrough unless asked for"
    );
    let clusters: Vec<(&str, &Value)> = b["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                    ["socket_address"],
            )
        })
        .collect();
    assert_eq!(
        clusters,
        [
            (
                "outbound|8080|v1|demoapp.app.svc.cluster.local",
                &json!({ "address": "demoapp.app.svc.cluster.local", "port_value": 8080 })
            ),
            (
                "outbound|8080|v2|demoapp.app.svc.cluster.local",
                &json!({ "address": "127.0.0.1", "port_value": 9 })
            ),
        ]
    );
}

// ------------------------------------------------------------------------------------------
// explain
// ------------------------------------------------------------------------------------------

fn explain(config: &str, request: &str, headers: &[&str]) -> String {
    let mut args = vec!["explain", "--config", config, request];
    for h in headers {
        args.extend(["-H", h]);
    }
    let (code, out, err) = meshrules(&args);
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

const V1: &str = "outbound|8080|v1|demoapp.app.svc.cluster.local";
const V2: &str = "outbound|8080|v2|demoapp.app.svc.cluster.local";

#[test]
fn explain_sends_the_canary_header_to_the_canary_route() {
    let out = explain(DEMO, "GET http://demoapp/", &["x-canary: true"]);
    assert!(
        has_line(
            &out,
            "virtual service: app/demoapp (examples/demoapp.yaml, document 1)"
        ),
        "{out}"
    );
    assert!(has_line(&out, "route: canary"), "{out}");
    assert!(has_line(&out, &format!("destination: {V2}")), "{out}");
    assert!(
        has_line(
            &out,
            &format!("request header: set x-meshrules-cluster: {V2}")
        ),
        "{out}"
    );
    assert!(
        has_line(&out, &format!("outcome: forward to {V2}")),
        "{out}"
    );
}

#[test]
fn explain_shows_the_weights_of_a_split() {
    let out = explain(DEMO, "http://Demoapp:80/anything", &[]);
    assert!(has_line(&out, "route: split"), "{out}");
    assert!(
        has_line(&out, &format!("destination: {V1} weight 90 (90.0%)")),
        "{out}"
    );
    assert!(
        has_line(&out, &format!("destination: {V2} weight 10 (10.0%)")),
        "{out}"
    );
    assert!(
        has_line(
            &out,
            "split: each request picks a destination at random, by weight"
        ),
        "{out}"
    );
    assert!(
        has_line(&out, "outcome: forward to one of 2 clusters"),
        "{out}"
    );
}

#[test]
fn explain_shows_fault_percentages_timeout_retries_and_rewrite() {
    let config = TempFile::new(
        "faults.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: shop, namespace: app }
spec:
  hosts: [shop.example.com]
  http:
    - match: [{ uri: { prefix: /api/ } }]
      fault:
        delay: { fixedDelay: 1.5s, percentage: { value: 25 } }
        abort: { httpStatus: 503, percentage: { value: 10 } }
      timeout: 3s
      retries: { attempts: 4, perTryTimeout: 500ms, retryOn: "5xx,reset" }
      rewrite: { uri: /v2/ }
      route: [{ destination: { host: shop.example.com } }]
"#,
    );
    let out = explain(
        config.path(),
        "GET http://shop.example.com/api/items?page=2",
        &[],
    );
    for line in [
        "fault: delay 1500 ms for 25% of requests",
        "fault: abort with HTTP 503 for 10% of requests",
        "fault: the other requests go on:",
        "destination: outbound|||shop.example.com",
        "timeout: 3000 ms",
        "retries: at most 4",
        "retries: on 5xx,reset",
        "retries: per try timeout 500 ms",
        "rewrite: :path /api/items?page=2 -> /v2/items?page=2",
        "request header: set x-envoy-original-path: /api/items?page=2",
    ] {
        assert!(has_line(&out, line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn explain_names_the_deny_policy_that_refuses_a_request() {
    let out = explain(DEMO, "GET http://demoapp/a/../admin", &[]);
    assert!(
        has_line(&out, "authz: denied by DENY policy app/deny-admin rules[0]"),
        "{out}"
    );
    assert!(
        has_line(&out, "outcome: the filter answers 403 (rbac_access_denied)"),
        "{out}"
    );
    assert!(
        !out.contains("route:"),
        "a denied request is not routed:\n{out}"
    );
}

const JWT_SECRET: &[u8] = b"meshrules-cli-test-secret-32-bytes!!";

fn jwt_config() -> TempFile {
    let jwks = json!({ "keys": [{ "kty": "oct", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(JWT_SECRET) }] });
    TempFile::new(
        "jwt.yaml",
        &format!(
            r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: jwt, namespace: app }}
spec:
  jwtRules: [{{ issuer: "https://issuer.example", jwks: '{jwks}' }}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: require-jwt, namespace: app }}
spec:
  action: ALLOW
  rules: [{{ from: [{{ source: {{ requestPrincipals: ["https://issuer.example/*"] }} }}] }}]
"#
        ),
    )
}

fn hs256(claims: &Value) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(JWT_SECRET).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

#[test]
fn explain_verifies_a_token_with_inline_keys_and_names_the_allow_policy() {
    let config = jwt_config();
    let token =
        hs256(&json!({ "iss": "https://issuer.example", "sub": "alice", "exp": 4_000_000_000u64 }));
    let auth = format!("authorization: Bearer {token}");
    let out = explain(config.path(), "GET http://demoapp/", &[&auth]);
    assert!(has_line(&out, "jwt: token verified by RequestAuthentication app/jwt (issuer \"https://issuer.example\", subject \"alice\")"), "{out}");
    assert!(
        has_line(&out, "request header: remove authorization"),
        "{out}"
    );
    assert!(
        has_line(
            &out,
            "authz: allowed by ALLOW policy app/require-jwt rules[0]"
        ),
        "{out}"
    );
    assert!(
        out.contains("virtual service: none for host \"demoapp\""),
        "{out}"
    );
}

#[test]
fn explain_without_a_token_shows_the_allow_policy_denying() {
    let config = jwt_config();
    let out = explain(config.path(), "GET http://demoapp/", &[]);
    assert!(
        has_line(
            &out,
            "jwt: no token: the request goes on without a request principal"
        ),
        "{out}"
    );
    assert!(
        has_line(&out, "authz: denied: no ALLOW policy matches"),
        "{out}"
    );
    assert!(
        has_line(&out, "outcome: the filter answers 403 (rbac_access_denied)"),
        "{out}"
    );
}

#[test]
fn explain_shows_a_refused_token_as_the_filter_answers_it() {
    let config = jwt_config();
    let token = hs256(&json!({ "iss": "https://issuer.example", "sub": "alice", "exp": 1 }));
    let auth = format!("authorization: Bearer {token}");
    let out = explain(config.path(), "GET http://demoapp/", &[&auth]);
    assert!(
        has_line(&out, "jwt: token refused: Jwt is expired"),
        "{out}"
    );
    assert!(
        has_line(
            &out,
            "outcome: the filter answers 401 (jwt_authn_access_denied)"
        ),
        "{out}"
    );
}

/// An ES256 token signed with the committed test key `ec256` (its public half is in
/// src/jwt/testdata/jwks.json, the set a jwksUri would serve).
fn es256(claims: &Value) -> String {
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::DecodePrivateKey;
    let key =
        p256::ecdsa::SigningKey::from_pkcs8_pem(include_str!("../src/jwt/testdata/ec256.pem"))
            .unwrap();
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT","kid":"ec256"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig: p256::ecdsa::Signature = key.sign(format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

const REMOTE_JWT: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: app }
spec:
  jwtRules: [{ issuer: "https://issuer.example", jwksUri: "https://keys.example/jwks.json" }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: require-jwt, namespace: app }
spec:
  action: ALLOW
  rules: [{ from: [{ source: { requestPrincipals: ["https://issuer.example/alice"] } }] }]
"#;

#[test]
fn explain_verifies_a_jwks_uri_token_with_the_keys_given_as_a_file_and_stops_without_them() {
    let config = TempFile::new("remote-jwt.yaml", REMOTE_JWT);
    let token =
        es256(&json!({ "iss": "https://issuer.example", "sub": "alice", "exp": 4_000_000_000u64 }));
    let auth = format!("authorization: Bearer {token}");
    let (code, out, err) = meshrules(&[
        "explain",
        "--config",
        config.path(),
        "GET http://demoapp/",
        "-H",
        &auth,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(has_line(&out, "outcome: the filter holds the request until https://keys.example/jwks.json is fetched; give its keys with --jwks https://keys.example/jwks.json=FILE to see the rest"), "{out}");
    assert!(!out.contains("authz:"), "{out}");

    let keys = "https://keys.example/jwks.json=src/jwt/testdata/jwks.json";
    let (code, out, err) = meshrules(&[
        "explain",
        "--config",
        config.path(),
        "GET http://demoapp/",
        "-H",
        &auth,
        "--jwks",
        keys,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(has_line(&out, "jwt: token verified by RequestAuthentication app/jwt (issuer \"https://issuer.example\", subject \"alice\")"), "{out}");
    assert!(
        has_line(
            &out,
            "authz: allowed by ALLOW policy app/require-jwt rules[0]"
        ),
        "{out}"
    );

    let (code, _, err) = meshrules(&[
        "explain",
        "--config",
        config.path(),
        "GET http://demoapp/",
        "--jwks",
        "https://other.example/k=src/jwt/testdata/jwks.json",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no RequestAuthentication names this jwksUri"),
        "{err}"
    );
}

#[test]
fn explain_reads_the_principals_of_a_peer_certificate_file_and_the_sni() {
    let config = TempFile::new(
        "mtls.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: web-only, namespace: app }
spec:
  action: ALLOW
  rules:
    - from: [{ source: { principals: ["cluster.local/ns/app/sa/web"] } }]
      when: [{ key: connection.sni, values: ["demoapp.app.svc.cluster.local"] }]
"#,
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["explain", "--config", config.path(), "GET http://demoapp/"];
        args.extend(extra);
        let (code, out, err) = meshrules(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let sni = ["--sni", "demoapp.app.svc.cluster.local"];
    // tests/fixtures/peer-sans.pem: URI SANs spiffe://td, spiffe://cluster.local/ns/app/sa/web.
    let cert = ["--peer-cert", "tests/fixtures/peer-sans.pem"];
    let allowed = "authz: allowed by ALLOW policy app/web-only rules[0]";
    assert!(has_line(&run(&[&cert[..], &sni[..]].concat()), allowed));
    assert!(has_line(
        &run(&cert),
        "authz: denied: no ALLOW policy matches"
    ));
    assert!(has_line(
        &run(&sni),
        "authz: denied: no ALLOW policy matches"
    ));
    let named = ["--peer-principal", "spiffe://cluster.local/ns/app/sa/web"];
    assert!(has_line(&run(&[&named[..], &sni[..]].concat()), allowed));
}

#[test]
fn explain_as_a_sidecar_names_a_portless_cluster_with_the_destination_port() {
    let config = TempFile::new(
        "sidecar.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: app }
spec:
  hosts: [reviews]
  http: [{ route: [{ destination: { host: reviews } }] }]
"#,
    );
    let (code, out, err) = meshrules(&[
        "explain",
        "--config",
        config.path(),
        "--proxy",
        "sidecar",
        "--proxy-namespace",
        "app",
        "--proxy-label",
        "app=productpage",
        "--destination",
        "10.0.0.9:9080",
        "GET http://reviews/",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        has_line(
            &out,
            "outcome: forward to outbound|9080||reviews.app.svc.cluster.local"
        ),
        "{out}"
    );
    // A plain Envoy has no listener port to take: the cluster keeps an empty one.
    let out = explain(config.path(), "GET http://reviews/", &[]);
    assert!(
        has_line(
            &out,
            "outcome: forward to outbound|||reviews.app.svc.cluster.local"
        ),
        "{out}"
    );
}

#[test]
fn explain_refuses_a_request_line_it_cannot_read() {
    let (code, _, err) = meshrules(&["explain", "--config", DEMO, "GET demoapp/"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a URL like http://host/path"), "{err}");
}

#[test]
fn explain_reports_config_problems_instead_of_explaining() {
    let bad = TempFile::new("bad-explain.yaml", BAD_YAML);
    let (code, out, _) = meshrules(&["explain", "--config", bad.path(), "http://demoapp/"]);
    assert_eq!(code, 1);
    assert!(out.contains("700 is not in 200..=599"), "{out}");
    assert!(!out.contains("outcome:"), "{out}");
}

// ------------------------------------------------------------------------------------------
// hostile input and output
// ------------------------------------------------------------------------------------------

const DUPLICATE_ACTION_YAML: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: app}
spec:
  action: DENY
  action: ALLOW
  rules: [{to: [{operation: {paths: [/admin]}}]}]
";

#[test]
fn check_refuses_a_duplicate_key_in_yaml() {
    let file = TempFile::new("dup.yaml", DUPLICATE_ACTION_YAML);
    let (code, out, err) = meshrules(&["check", file.path()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "{}: not valid YAML: duplicate mapping key",
            file.path()
        )),
        "{out}"
    );
    let single = DUPLICATE_ACTION_YAML.replace("  action: ALLOW\n", "");
    let file = TempFile::new("single.yaml", &single);
    assert_eq!(meshrules(&["check", file.path()]).0, 0);
}

#[test]
fn check_refuses_a_duplicate_key_in_json_naming_its_path() {
    let json = r#"{"resources": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "app"},
        "spec": {"action": "DENY", "action": "ALLOW", "rules": [{}]}}]}"#;
    let file = TempFile::new("dup.json", json);
    let (code, out, err) = meshrules(&["check", file.path()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "{}: resources[0].spec.action: duplicate key \"action\" at line 3",
            file.path()
        )),
        "{out}"
    );
}

/// Runs the binary with standard output on /dev/full (every write fails: ENOSPC).
fn to_dev_full(args: &[&str]) -> (i32, String) {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("meshrules"))
        .current_dir(repo())
        .args(args)
        .stdout(full)
        .output()
        .unwrap();
    (
        out.status.code().expect("an exit code, not a signal"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_reports_a_failed_write_instead_of_panicking() {
    let bad = TempFile::new("bad.yaml", "kind: Gateway\n");
    for args in [
        &["explain", "--config", DEMO, "GET http://demoapp/"][..],
        &["check", DEMO],
        &["check", bad.path()],
        &["bundle", DEMO],
        &["bundle", "--output", "envoy", DEMO],
    ] {
        let (code, err) = to_dev_full(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("meshrules: cannot write output: No space left on device")),
            "{args:?}: {err}"
        );
    }
}

/// Istio YAML that loads with one warning of each kind `check` gives, in one document each.
const WARNED: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-2, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  tcp: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-browsers, namespace: default}
spec:
  action: DENY
  rules:
  - when: [{key: 'request.headers[user-agent]', values: ['*Mozilla*']}]
";

#[test]
fn check_prints_each_warning_as_file_document_path_warning_message_and_exits_0() {
    let file = TempFile::new("warned.yaml", WARNED);
    let f = file.path();
    let (code, out, err) = meshrules(&["check", f]);
    assert_eq!(code, 0, "{out}{err}");
    let expected = [
        "document 1: metadata.namespace: warning: not set: the resource is in namespace \"default\", where kubectl apply puts it (a short host such as reviews is reviews.default.svc.cluster.local); set it, or defaultNamespace for every resource without one",
        "document 1: spec.http[1]: warning: never matches: http[0] before it matches every request (it has no match, or only uri prefix \"/\"); Istio warns \"route without matches defined before\". Put the catch-all route last",
        "document 1: spec.http[0].route[0].destination.subset: warning: no DestinationRule for reviews.default.svc.cluster.local in the configuration defines subset \"v1\": Istio accepts the route, but istiod creates cluster outbound||v1|reviews.default.svc.cluster.local only for a subset a DestinationRule defines, so requests here get 503 until one is applied (a plain Envoy needs that cluster in its config)",
        "document 2: spec.tcp: warning: ignored: meshrules is an HTTP filter; tcp routes need Istio's own (native) VirtualService",
        "document 2: spec.hosts[0]: warning: VirtualService default/reviews, listed first, already serves reviews.default.svc.cluster.local, reviews, reviews.default, reviews.default.svc: requests for it never reach VirtualService default/reviews-2 (istiod too uses one VirtualService per host on a sidecar); merge the two",
        "document 3: spec.trafficPolicy: warning: not applied by the filter: traffic policies (load balancer, connection pool, outlier detection, TLS) are Envoy cluster settings; in Istio, istiod writes them into the clusters when the DestinationRule is applied to the mesh; for a plain Envoy, `meshrules bundle --output envoy` writes them into its clusters",
        "document 4: spec.rules[0].when[0].values[0]: warning: Istio reads `*` only as the whole value or its first or last character: \"*Mozilla*\" matches values ending in \"Mozilla*\", with a literal `*`. AuthorizationPolicy has no contains or glob match: list prefix (x*) or suffix (*x) values, or match \".*Mozilla.*\" as a regex in a VirtualService route",
    ]
    .map(|l| format!("{f}: {l}"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..lines.len() - 1], expected, "{out}");
    assert_eq!(
        lines[lines.len() - 1],
        "ok: 1 file, 4 documents, 4 resources (1 AuthorizationPolicy, 1 DestinationRule, 2 VirtualService), 7 warnings"
    );
    assert_eq!(err, "");
}

#[test]
fn check_strict_fails_on_warnings_and_passes_a_clean_config() {
    let file = TempFile::new("strict.yaml", WARNED);
    let (code, out, err) = meshrules(&["check", "--strict", file.path()]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.lines().count(), 7, "{out}");
    assert!(!out.contains("ok:"), "{out}");
    assert_eq!(err, "meshrules: 7 warnings (--strict)\n");
    let (code, out, err) = meshrules(&["check", "--strict", DEMO]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with(", 0 warnings\n"), "{out}");
}

#[test]
fn bundle_and_explain_print_warnings_on_standard_error_only() {
    let file = TempFile::new("bundle-warned.yaml", WARNED);
    let (code, out, err) = meshrules(&["bundle", file.path()]);
    assert_eq!(code, 0, "{err}");
    let config: Value = serde_json::from_str(&out).expect("only JSON on standard output");
    assert!(config["resources"].is_array());
    assert_eq!(err.matches(": warning: ").count(), 7, "{err}");
}

#[test]
fn a_default_namespace_in_the_plugin_config_places_pasted_yaml_and_the_wasmplugin() {
    let pasted = TempFile::new(
        "pasted.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n\
         spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n",
    );
    let settings = TempFile::new("settings.json", r#"{"defaultNamespace": "bookinfo"}"#);
    let (code, out, err) = meshrules(&["check", pasted.path(), settings.path()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with(", 0 warnings\n"), "{out}");
    let (code, out, err) = meshrules(&[
        "bundle",
        "--output",
        "wasmplugin",
        pasted.path(),
        settings.path(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(yaml(&out)["metadata"]["namespace"], "bookinfo", "{out}");
    let (code, out, err) = meshrules(&[
        "explain",
        "--config",
        pasted.path(),
        "--config",
        settings.path(),
        "GET http://reviews/",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("outbound|||reviews.bookinfo.svc.cluster.local"),
        "{out}"
    );
}

// ------------------------------------------------------------------------------------------
// DestinationRule traffic policies: check
// ------------------------------------------------------------------------------------------

/// Istio's own DestinationRule CRD cases (tests/fixtures/istio/testdata, from
/// pkg/config/validation/testdata/crds upstream): `check` accepts every valid one and refuses
/// every invalid one at the field the API server names in the case's `_err`.
#[test]
fn check_accepts_and_refuses_istios_destination_rule_crd_cases_as_istio_does() {
    let dir = repo().join("tests/fixtures/istio/testdata");
    let mut seen = (0, 0);
    for (file, valid) in [
        ("destinationrule-valid.yaml", true),
        ("destinationrule-invalid.yaml", false),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for (i, mut doc) in serde_saphyr::from_multiple::<Value>(&text)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            let err = doc.as_object_mut().unwrap().remove("_err");
            let case = TempFile::new("case.json", &doc.to_string());
            let (code, out, _) = meshrules(&["check", case.path()]);
            if valid {
                seen.0 += 1;
                assert_eq!(code, 0, "{file} document {}: {out}", i + 1);
            } else {
                seen.1 += 1;
                let err = err.unwrap();
                let field = err.as_str().unwrap().split(": ").next().unwrap();
                assert_eq!(code, 1, "{file} document {}: {out}", i + 1);
                assert!(
                    out.contains(&format!("{}: document 1: {field}: ", case.path())),
                    "{file} document {}: expected a problem at {field}: {out}",
                    i + 1
                );
            }
        }
    }
    assert_eq!(seen, (4, 3));
}

/// The DestinationRule of the README's tutorial, with the two mistakes people make.
const TUTORIAL_DR: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      http:
        maxConnections: 100
        maxPendingRequests: 10
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 30s
      baseEjectionTime: 30s
  subsets:
  - name: v1
    labels: {version: v1}
";

#[test]
fn check_names_each_misspelt_policy_field_with_the_field_meant() {
    let file = TempFile::new("dr.yaml", TUTORIAL_DR);
    let f = file.path();
    let (code, out, err) = meshrules(&["check", f]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("{f}: document 1: spec.trafficPolicy.connectionPool.http.maxConnections: unknown field `maxConnections`: did you mean `connectionPool.tcp.maxConnections`?"),
            format!("{f}: document 1: spec.trafficPolicy.connectionPool.http.maxPendingRequests: unknown field `maxPendingRequests`: did you mean `connectionPool.http.http1MaxPendingRequests`?"),
        ]
    );
    assert_eq!(err, "meshrules: 2 problems in 1 file\n");
}

#[test]
fn check_checks_subset_and_port_level_policies_and_keeps_the_subsets() {
    let file = TempFile::new(
        "dr.yaml",
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: LEAST_CONNECTION}
  subsets:
  - name: v1
    trafficPolicy:
      tls: {mode: MUTUAL, clientCertificate: /c.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
",
    );
    let f = file.path();
    let (code, out, _) = meshrules(&["check", f]);
    assert_eq!(code, 1);
    // The subsets still count: the route to v1 is not reported.
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("{f}: document 1: spec.trafficPolicy.portLevelSettings[0].loadBalancer.simple: \"LEAST_CONNECTION\" is not one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST"),
            format!("{f}: document 1: spec.subsets[0].trafficPolicy.tls.privateKey: private key required for mutual tls (istiod)"),
        ]
    );
}

// ------------------------------------------------------------------------------------------
// DestinationRule traffic policies: bundle --output envoy
// ------------------------------------------------------------------------------------------

/// A VirtualService `reviews` (namespace bookinfo) whose routes reach each `(subset, port)`:
/// the request header `x-to: <subset>-<port>` picks one.
fn reviews_routes(to: &[(&str, u16)]) -> String {
    let mut http = String::new();
    for (subset, port) in to {
        http.push_str(&format!(
            "  - match: [{{headers: {{x-to: {{exact: {subset}-{port}}}}}}}]\n    route: [{{destination: {{host: reviews, subset: {subset}, port: {{number: {port}}}}}}}]\n"
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  hosts: [reviews]\n  http:\n{http}---\n"
    )
}

/// `bundle --output envoy` of `yaml`: the bootstrap, or the exit code and output.
fn bundle_envoy(yaml: &str) -> Result<Value, (i32, String, String)> {
    let file = TempFile::new("dr.yaml", yaml);
    let (code, out, err) = meshrules(&["bundle", "--output", "envoy", file.path()]);
    if code == 0 {
        Ok(self::yaml(&out))
    } else {
        Err((code, out, err))
    }
}

/// The cluster `outbound|<port>|<subset>|reviews.bookinfo.svc.cluster.local`, without what
/// every cluster has (name, type, endpoints).
fn reviews_cluster(bootstrap: &Value, subset: &str, port: u16) -> Value {
    let name = format!("outbound|{port}|{subset}|reviews.bookinfo.svc.cluster.local");
    let mut c = bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no cluster {name}"))
        .clone();
    for key in ["name", "type", "load_assignment"] {
        c.as_object_mut().unwrap().remove(key);
    }
    c
}

/// istiod's getDefaultCircuitBreakerThresholds, which every cluster gets.
fn default_thresholds() -> Value {
    json!({ "max_connections": 4294967295u64, "max_pending_requests": 4294967295u64,
            "max_requests": 4294967295u64, "max_retries": 4294967295u64, "track_remaining": true })
}

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

#[test]
fn bundle_envoy_writes_a_policy_as_istiods_apply_connection_pool_outlier_detection_and_load_balancer(
) {
    let yaml = reviews_routes(&[("v1", 9080)])
        + "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmup: {duration: 60s, minimumPercent: 20, aggression: 2}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms, maxConnectionDuration: 1h,
            tcpKeepalive: {probes: 3, time: 600s, interval: 30s}}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 5,
             maxRetries: 4, idleTimeout: 90s}
    outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 10s,
                       baseEjectionTime: 30s, maxEjectionPercent: 50, minHealthPercent: 25,
                       splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 4}
    retryBudget: {percent: 25, minRetryConcurrency: 5}
  subsets: [{name: v1, labels: {version: v1}}]
";
    let b = bundle_envoy(&yaml).unwrap();
    assert_eq!(
        reviews_cluster(&b, "v1", 9080),
        json!({
            "connect_timeout": "0.25s",
            "circuit_breakers": { "thresholds": [{
                "max_connections": 100, "max_pending_requests": 10, "max_requests": 1000,
                "max_retries": 4, "track_remaining": true,
                "retry_budget": { "budget_percent": { "value": 25.0 }, "min_retry_concurrency": 5 } }] },
            "upstream_connection_options": { "tcp_keepalive": {
                "keepalive_probes": 3, "keepalive_time": 600, "keepalive_interval": 30 } },
            "typed_extension_protocol_options": { HTTP_OPTIONS: {
                "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
                "common_http_protocol_options": {
                    "idle_timeout": "90s", "max_requests_per_connection": 5,
                    "max_connection_duration": "3600s" },
                "explicit_http_config": { "http_protocol_options": {} } } },
            "outlier_detection": {
                "enforcing_success_rate": 0,
                "consecutive_5xx": 3, "enforcing_consecutive_5xx": 100,
                "consecutive_gateway_failure": 2, "enforcing_consecutive_gateway_failure": 100,
                "interval": "10s", "base_ejection_time": "30s", "max_ejection_percent": 50,
                "split_external_local_origin_errors": true,
                "consecutive_local_origin_failure": 4,
                "enforcing_consecutive_local_origin_failure": 100,
                "enforcing_local_origin_success_rate": 0 },
            "common_lb_config": { "healthy_panic_threshold": { "value": 25 } },
            "lb_policy": "ROUND_ROBIN",
            "round_robin_lb_config": { "slow_start_config": {
                "slow_start_window": "60s",
                "aggression": { "default_value": 2.0, "runtime_key": "(" },
                "min_weight_percent": { "value": 20.0 } } },
        })
    );
}

#[test]
fn bundle_envoy_gives_every_cluster_istiods_defaults_least_request_and_lifted_thresholds() {
    let yaml = reviews_routes(&[("v1", 9080)])
        + "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
";
    let b = bundle_envoy(&yaml).unwrap();
    assert_eq!(
        reviews_cluster(&b, "v1", 9080),
        json!({ "connect_timeout": "1s", "lb_policy": "LEAST_REQUEST",
                "circuit_breakers": { "thresholds": [default_thresholds()] } })
    );
}

/// istiod's MergeSubsetTrafficPolicy: a port entry replaces the four settings of its level
/// (what it leaves out is a default, not inherited); a subset's settings go over the
/// destination level's one by one; a subset's port entry replaces all four.
#[test]
fn bundle_envoy_merges_subset_over_top_level_and_port_level_over_that_as_istiod_does() {
    let yaml = reviews_routes(&[("v1", 9080), ("v1", 9090), ("v2", 9080), ("v3", 9080)])
        + "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 10}}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
  - name: v2
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 2}
  - name: v3
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 2}
      portLevelSettings:
      - port: {number: 9080}
        connectionPool: {http: {http2MaxRequests: 7}}
";
    let b = bundle_envoy(&yaml).unwrap();
    let lb = |subset, port| reviews_cluster(&b, subset, port)["lb_policy"].clone();
    let thresholds = |subset, port| {
        reviews_cluster(&b, subset, port)["circuit_breakers"]["thresholds"][0].clone()
    };
    let outlier = |subset, port| reviews_cluster(&b, subset, port)["outlier_detection"].clone();
    let mut ten = default_thresholds();
    ten["max_connections"] = json!(10);
    // Port 9090 has no entry: the destination level.
    assert_eq!(
        (lb("v1", 9090), thresholds("v1", 9090)),
        (json!("ROUND_ROBIN"), ten)
    );
    // Port 9080's entry: RANDOM, and the default connection pool, not maxConnections 10.
    assert_eq!(
        (lb("v1", 9080), thresholds("v1", 9080)),
        (json!("RANDOM"), default_thresholds())
    );
    // v2 adds its outlier detection to port 9080's settings.
    assert_eq!(lb("v2", 9080), json!("RANDOM"));
    assert_eq!(outlier("v2", 9080)["consecutive_5xx"], json!(2));
    // v3's port entry replaces all four: default load balancer, its pool, no outlier detection.
    let mut seven = default_thresholds();
    seven["max_requests"] = json!(7);
    assert_eq!(
        (lb("v3", 9080), thresholds("v3", 9080)),
        (json!("LEAST_REQUEST"), seven)
    );
    assert_eq!(outlier("v3", 9080), Value::Null);
}

/// istiod's hashForHTTPDestination and consistentHashToHashPolicy: the hash policy goes on a
/// route of the cluster's own (the one cluster_header route picks every cluster), and the
/// cluster gets RING_HASH (1024, Envoy's default, unless given) or MAGLEV.
#[test]
fn bundle_envoy_puts_each_consistent_hash_on_a_cluster_header_route_of_its_cluster() {
    let yaml = reviews_routes(&[("v1", 9080), ("v2", 9080), ("v3", 9080), ("v4", 9080), ("v5", 9080)])
        + "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  subsets:
  - name: v1
  - name: v2
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpCookie: {name: session, ttl: 60s, path: /, attributes: [{name: SameSite, value: Strict}]}
          ringHash: {minimumRingSize: 64}
  - name: v3
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}
  - name: v4
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {consistentHash: {httpQueryParameterName: user}}
  - name: v5
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
";
    let b = bundle_envoy(&yaml).unwrap();
    let hcm =
        &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let by_cluster: Vec<(String, Value)> = routes
        .iter()
        .filter_map(|r| {
            let name = r["match"]["headers"][0]["string_match"]["exact"].as_str()?;
            assert_eq!(r["route"]["cluster_header"], "x-meshrules-cluster");
            assert_eq!(
                r["request_headers_to_remove"],
                json!(["x-meshrules-cluster"])
            );
            Some((name.to_string(), r["route"]["hash_policy"].clone()))
        })
        .collect();
    let cluster = |s: &str| format!("outbound|9080|{s}|reviews.bookinfo.svc.cluster.local");
    assert_eq!(
        by_cluster,
        [
            (
                cluster("v1"),
                json!([{ "header": { "header_name": "x-user" } }])
            ),
            (
                cluster("v2"),
                json!([{ "cookie": { "name": "session", "ttl": "60s", "path": "/",
                "attributes": [{ "name": "SameSite", "value": "Strict" }] } }])
            ),
            (
                cluster("v3"),
                json!([{ "connection_properties": { "source_ip": true } }])
            ),
            (
                cluster("v4"),
                json!([{ "query_parameter": { "name": "user" } }])
            ),
            // v5 overrides the load balancer, but istiod's route still takes the destination
            // level's hash (harmless: a RANDOM cluster computes none).
            (
                cluster("v5"),
                json!([{ "header": { "header_name": "x-user" } }])
            ),
        ]
    );
    // The catch-all cluster_header route comes after them.
    assert_eq!(routes.len(), 6);
    assert_eq!(routes[5]["match"]["headers"][0]["present_match"], true);
    let lb = |s| {
        let c = reviews_cluster(&b, s, 9080);
        (
            c["lb_policy"].clone(),
            c["ring_hash_lb_config"].clone(),
            c["maglev_lb_config"].clone(),
        )
    };
    assert_eq!(
        lb("v1"),
        (
            json!("RING_HASH"),
            json!({ "minimum_ring_size": 1024 }),
            Value::Null
        )
    );
    assert_eq!(
        lb("v2"),
        (
            json!("RING_HASH"),
            json!({ "minimum_ring_size": 64 }),
            Value::Null
        )
    );
    assert_eq!(
        lb("v3"),
        (json!("MAGLEV"), Value::Null, json!({ "table_size": 65537 }))
    );
    assert_eq!(
        lb("v4"),
        (
            json!("RING_HASH"),
            json!({ "minimum_ring_size": 1024 }),
            Value::Null
        )
    );
    assert_eq!(lb("v5"), (json!("RANDOM"), Value::Null, Value::Null));
}

/// istiod's constructUpstreamTLS with certificate files: the files go into the
/// UpstreamTlsContext (istiod serves the same files over SDS), SANs are exact matchers, and
/// without `sni` Envoy takes the request's authority (setAutoSniAndAutoSanValidation).
#[test]
fn bundle_envoy_writes_simple_and_mutual_tls_with_their_files_as_upstream_tls_contexts() {
    let yaml = reviews_routes(&[("v1", 9080), ("v2", 9080)])
        + "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
  subsets:
  - name: v1
  - name: v2
    trafficPolicy:
      tls: {mode: MUTUAL, clientCertificate: /etc/c.pem, privateKey: /etc/k.pem,
            caCertificates: /etc/ca.pem, subjectAltNames: [reviews.example.com],
            sni: reviews.example.com, caCrl: /etc/crl.pem}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 100}}
";
    let b = bundle_envoy(&yaml).unwrap();
    let tls_type =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
    let simple = reviews_cluster(&b, "v1", 9080);
    assert_eq!(
        simple["transport_socket"],
        json!({ "name": "envoy.transport_sockets.tls", "typed_config": { "@type": tls_type,
            "common_tls_context": { "validation_context": { "trusted_ca": { "filename": "/etc/ca.pem" } } } } })
    );
    assert_eq!(
        simple["typed_extension_protocol_options"][HTTP_OPTIONS]["upstream_http_protocol_options"],
        json!({ "auto_sni": true, "auto_san_validation": true })
    );
    let mutual = reviews_cluster(&b, "v2", 9080);
    assert_eq!(
        mutual["transport_socket"]["typed_config"],
        json!({ "@type": tls_type, "sni": "reviews.example.com", "common_tls_context": {
            "tls_certificates": [{ "certificate_chain": { "filename": "/etc/c.pem" },
                                   "private_key": { "filename": "/etc/k.pem" } }],
            "validation_context": {
                "trusted_ca": { "filename": "/etc/ca.pem" },
                "match_typed_subject_alt_names": [
                    { "san_type": "DNS", "matcher": { "exact": "reviews.example.com" } },
                    { "san_type": "URI", "matcher": { "exact": "reviews.example.com" } }],
                "crl": { "filename": "/etc/crl.pem" } },
            "alpn_protocols": ["h2"] } })
    );
    // h2UpgradePolicy: UPGRADE makes it an HTTP/2 cluster (istiod's setH2Options).
    assert_eq!(
        mutual["typed_extension_protocol_options"][HTTP_OPTIONS]["explicit_http_config"],
        json!({ "http2_protocol_options": { "max_concurrent_streams": 100 } })
    );
}

/// A DestinationRule with one of each setting `bundle --output envoy` cannot write.
const UNTRANSLATABLE: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: RANDOM
      warmupDurationSecs: 30s
      localityLbSetting: {enabled: true}
    connectionPool: {http: {maxConcurrentStreams: 10}}
    outlierDetection: {consecutiveErrors: 5, outlierDetectionHttpErrorCodes: [500]}
    tunnel: {targetHost: proxy.example.com, targetPort: 8080}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: v1
    trafficPolicy:
      loadBalancer: {simple: PASSTHROUGH}
      tls: {mode: SIMPLE}
  - name: v2
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: reviews-client}
";

#[test]
fn bundle_envoy_refuses_each_untranslatable_setting_with_its_path_and_reason() {
    let yaml = reviews_routes(&[("v1", 9080)]) + UNTRANSLATABLE;
    let (code, out, err) = bundle_envoy(&yaml).unwrap_err();
    assert_eq!(code, 1, "{err}");
    let problems: Vec<(&str, &str)> = out
        .lines()
        .map(|l| {
            let rest = l.split_once(": document 2: ").unwrap().1;
            rest.split_once(": ").unwrap()
        })
        .collect();
    let paths: Vec<&str> = problems.iter().map(|p| p.0).collect();
    assert_eq!(
        paths,
        [
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
            "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
            "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
            "spec.trafficPolicy.outlierDetection.consecutiveErrors",
            "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes",
            "spec.trafficPolicy.portLevelSettings[0].tls.mode",
            "spec.trafficPolicy.tunnel",
            "spec.subsets[0].trafficPolicy.loadBalancer.simple",
            "spec.subsets[0].trafficPolicy.tls.caCertificates",
            "spec.subsets[1].trafficPolicy.tls.credentialName",
        ],
        "{out}"
    );
    let reason = |path| problems.iter().find(|p| p.0 == path).unwrap().1;
    assert!(
        reason("spec.trafficPolicy.portLevelSettings[0].tls.mode").starts_with(
            "ISTIO_MUTUAL is refused outside Istio: it presents the workload certificate istiod's CA issues"
        ),
        "{out}"
    );
    assert!(
        reason("spec.subsets[0].trafficPolicy.loadBalancer.simple")
            .starts_with("PASSTHROUGH is not translated: istiod makes it an ORIGINAL_DST cluster"),
        "{out}"
    );
    assert!(
        problems.iter().all(|p| p.1.len() > 40),
        "every refusal says why: {out}"
    );
}

/// Inside Istio, istiod writes the policies into the clusters from the DestinationRule
/// applied to the mesh: the filter's configuration and WasmPlugin take the same rule, with
/// the warning saying so.
#[test]
fn bundle_pluginconfig_and_wasmplugin_leave_policies_to_istiod_and_say_so() {
    let file = TempFile::new(
        "dr.yaml",
        &(reviews_routes(&[("v1", 9080)]) + UNTRANSLATABLE),
    );
    for output in ["pluginconfig", "wasmplugin"] {
        let (code, _, err) = meshrules(&[
            "bundle",
            "--output",
            output,
            "--sha256",
            &"a".repeat(64),
            file.path(),
        ]);
        assert_eq!(code, 0, "{output}: {err}");
        assert!(
            err.contains("spec.trafficPolicy: warning: not applied by the filter: traffic policies (load balancer, connection pool, outlier detection, TLS) are Envoy cluster settings; in Istio, istiod writes them into the clusters when the DestinationRule is applied to the mesh"),
            "{output}: {err}"
        );
    }
}

#[test]
fn bundle_envoy_refuses_a_second_policy_for_one_host_as_istiod_would_ignore_it() {
    let yaml = reviews_routes(&[("v1", 9080)])
        + "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-pool, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}
";
    let (_, out, _) = bundle_envoy(&yaml).unwrap_err();
    assert!(
        out.contains("document 3: spec.trafficPolicy: resources[1].spec already sets the traffic policy of reviews.bookinfo.svc.cluster.local: istiod would use only the first DestinationRule's; merge the two"),
        "{out}"
    );
}

#[test]
fn bundle_envoy_applies_a_wildcard_hosts_policy_to_the_hosts_it_covers_without_their_own() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-to: {exact: ratings}}}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
  - route: [{destination: {host: reviews, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: bookinfo}
spec:
  host: '*.bookinfo.svc.cluster.local'
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
";
    let b = bundle_envoy(yaml).unwrap();
    let lb = |host: &str| {
        let name = format!("outbound|9080||{host}.bookinfo.svc.cluster.local");
        b["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap()["lb_policy"]
            .clone()
    };
    assert_eq!(lb("reviews"), json!("RANDOM"));
    assert_eq!(
        lb("ratings"),
        json!("ROUND_ROBIN"),
        "its own rule, not the wildcard's"
    );
}
