//! Reads the files a user names into one pluginConfig, remembering where every resource came
//! from, and validates it with the filter's own `compile::load` so that each problem can be
//! reported against its file, document and field path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use meshrules::compile::{self, Anonymous, Identity, Loaded};
use meshrules::config::{self, ConfigError};
use serde_json::{Map, Value};

/// Where a piece of the combined pluginConfig was written.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: String,
    /// 1-based among the file's non-empty documents.
    pub document: usize,
    /// Path of the piece inside its document (`""`, `resources[2]`, `spec.pluginConfig`, ...).
    pub prefix: String,
}

/// One problem (or warning), located as precisely as it can be.
#[derive(Debug)]
pub struct Problem {
    pub file: String,
    pub document: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The inputs merged into one pluginConfig.
#[derive(Debug, Default)]
pub struct Inputs {
    /// `{"resources": [...], "routing": ..., "security": ...}` as the filter will get it.
    pub config: Map<String, Value>,
    /// The origin of each entry of `config["resources"]`.
    resources: Vec<Origin>,
    /// Where `routing`, `security` (and any other top-level key) came from.
    settings: Option<Origin>,
    pub files: usize,
    /// The files in the order given.
    file_order: Vec<String>,
    pub documents: usize,
    /// Problems found while reading, before the filter's validation runs.
    pub problems: Vec<Problem>,
}

/// A validated configuration: the compiled rules and the warnings the filter would log.
pub struct Validated {
    pub inputs: Inputs,
    pub loaded: Loaded,
    pub warnings: Vec<Problem>,
}

impl Inputs {
    /// Reads every file (`-` is standard input). Unreadable files and documents that are
    /// neither Istio objects nor pluginConfigs become problems; reading goes on.
    pub fn read(files: &[String]) -> Inputs {
        let mut inputs = Inputs::default();
        for file in files {
            inputs.files += 1;
            inputs.file_order.push(file.clone());
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            };
            match text {
                Ok(text) => inputs.add_file(file, &text),
                Err(e) => inputs.problem(file, None, "", format!("cannot read: {e}")),
            }
        }
        inputs
            .config
            .entry("resources")
            .or_insert_with(|| Value::Array(Vec::new()));
        inputs
    }

    fn problem(&mut self, file: &str, document: Option<usize>, path: &str, message: String) {
        self.problems.push(Problem {
            file: file.to_string(),
            document,
            path: path.to_string(),
            message,
        });
    }

    fn add_file(&mut self, file: &str, text: &str) {
        let documents = match parse_documents(file, text) {
            Ok(docs) => docs,
            Err(e) => {
                let path = if e.path == "$" { "" } else { &e.path };
                return self.problem(file, None, path, e.message);
            }
        };
        for (i, doc) in documents.into_iter().enumerate() {
            self.documents += 1;
            self.add_document(file, i + 1, doc);
        }
    }

    fn add_document(&mut self, file: &str, document: usize, doc: Value) {
        let origin = |prefix: &str| Origin {
            file: file.to_string(),
            document,
            prefix: prefix.to_string(),
        };
        let Value::Object(mut obj) = doc else {
            return self.problem(
                file,
                Some(document),
                "",
                "expected an Istio object or a pluginConfig, found no mapping".into(),
            );
        };
        match obj.get("kind").and_then(Value::as_str) {
            // `kubectl get -o yaml` wraps several objects in a List.
            Some("List") => match obj.remove("items") {
                Some(Value::Array(items)) => {
                    for (i, item) in items.into_iter().enumerate() {
                        self.add_resource(item, origin(&format!("items[{i}]")));
                    }
                }
                _ => self.problem(file, Some(document), "items", "expected a list".into()),
            },
            // A WasmPlugin of this filter: its pluginConfig is what the filter gets.
            Some("WasmPlugin") => match obj
                .remove("spec")
                .and_then(|mut s| s.as_object_mut().and_then(|s| s.remove("pluginConfig")))
            {
                Some(Value::Object(pc)) => self.add_plugin_config(pc, origin("spec.pluginConfig")),
                _ => self.problem(
                    file,
                    Some(document),
                    "spec.pluginConfig",
                    "expected a mapping (the filter's configuration)".into(),
                ),
            },
            Some(_) => self.add_resource(Value::Object(obj), origin("")),
            None if obj.contains_key("resources")
                || obj.contains_key("routing")
                || obj.contains_key("security")
                || obj.contains_key("defaultNamespace")
                || obj.contains_key("rateLimits") =>
            {
                self.add_plugin_config(obj, origin(""))
            }
            None => self.problem(
                file,
                Some(document),
                "kind",
                "expected an Istio object (with kind) or a pluginConfig (with resources)".into(),
            ),
        }
    }

    fn add_resource(&mut self, resource: Value, origin: Origin) {
        self.resources.push(origin);
        let list = self
            .config
            .entry("resources")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(resource);
        }
    }

    /// A pluginConfig's resources join the others; its other keys (routing, security, and
    /// anything the filter would refuse) become the combined config's, from one input only.
    fn add_plugin_config(&mut self, mut pc: Map<String, Value>, origin: Origin) {
        let join = |prefix: &str, key: &str| {
            if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            }
        };
        match pc.remove("resources") {
            Some(Value::Array(list)) => {
                for (i, r) in list.into_iter().enumerate() {
                    let prefix = join(&origin.prefix, &format!("resources[{i}]"));
                    self.add_resource(
                        r,
                        Origin {
                            prefix,
                            ..origin.clone()
                        },
                    );
                }
            }
            None => {}
            Some(_) => self.problem(
                &origin.file,
                Some(origin.document),
                &join(&origin.prefix, "resources"),
                "expected a list".into(),
            ),
        }
        if pc.is_empty() {
            return;
        }
        if let Some(first) = &self.settings {
            let message = format!(
                "settings ({}) are already given by {} document {}; give them in one input",
                pc.keys().cloned().collect::<Vec<_>>().join(", "),
                first.file,
                first.document
            );
            return self.problem(&origin.file, Some(origin.document), &origin.prefix, message);
        }
        self.config.extend(pc);
        self.settings = Some(origin);
    }

    /// The combined pluginConfig as JSON text.
    pub fn config_json(&self) -> String {
        Value::Object(self.config.clone()).to_string()
    }

    /// Places a problem the filter reported at `resources[i]...` or a settings path.
    pub fn locate(&self, e: &ConfigError) -> Problem {
        let (origin, rest) = match resource_index(&e.path) {
            Some((i, rest)) => (self.resources.get(i), rest),
            None => (self.settings.as_ref(), e.path.as_str()),
        };
        match origin {
            Some(o) => {
                let rest = rest.trim_start_matches('.');
                let path = match (o.prefix.is_empty(), rest.is_empty() || rest == "$") {
                    (true, _) => rest.to_string(),
                    (false, true) => o.prefix.clone(),
                    (false, false) => format!("{}.{rest}", o.prefix),
                };
                Problem {
                    file: o.file.clone(),
                    document: Some(o.document),
                    path,
                    message: e.message.clone(),
                }
            }
            None => Problem {
                file: "(configuration)".into(),
                document: None,
                path: e.path.clone(),
                message: e.message.clone(),
            },
        }
    }

    /// Runs the filter's validation and compilation for a plain Envoy, and checks the
    /// DestinationRule traffic policies the filter leaves to Envoy's clusters as Istio would.
    /// `Err` holds every
    /// problem, located.
    pub fn validate(self) -> Result<Validated, Vec<Problem>> {
        self.validate_as(&Anonymous)
    }

    /// As [`Inputs::validate`], for the proxy `identity` describes.
    pub fn validate_as(self, identity: &dyn Identity) -> Result<Validated, Vec<Problem>> {
        let mut problems = Vec::new();
        let json = self.config_json();
        let result = compile::load(json.as_bytes(), identity);
        let policies = compile::check_traffic_policies(json.as_bytes());
        let mut inputs = self;
        problems.append(&mut inputs.problems);
        let refused: Vec<Problem> = policies.errors.iter().map(|e| inputs.locate(e)).collect();
        match result {
            Ok(loaded) if problems.is_empty() && refused.is_empty() => {
                // Told apart from problems the way compilers do: `path: warning: message`.
                let mut warnings: Vec<Problem> = loaded
                    .warnings
                    .iter()
                    .chain(&policies.warnings)
                    .map(|w| {
                        let mut p = inputs.locate(w);
                        p.message.insert_str(0, "warning: ");
                        p
                    })
                    .collect();
                // In reading order; the filter finds them phase by phase.
                warnings.sort_by_key(|p| {
                    let file = inputs.file_order.iter().position(|f| *f == p.file);
                    (file, p.document)
                });
                Ok(Validated {
                    inputs,
                    loaded,
                    warnings,
                })
            }
            Ok(_) => {
                problems.extend(refused);
                Err(problems)
            }
            Err(errors) => {
                problems.extend(errors.iter().map(|e| inputs.locate(e)));
                problems.extend(refused);
                Err(problems)
            }
        }
    }

    /// How many resources of each kind were read.
    pub fn kinds(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        if let Some(Value::Array(list)) = self.config.get("resources") {
            for r in list {
                let kind = r.get("kind").and_then(Value::as_str).unwrap_or("?");
                *out.entry(kind.to_string()).or_default() += 1;
            }
        }
        out
    }

    /// Where the resource `namespace/name` of `kind` was written.
    pub fn origin_of(&self, kind: &str, id: &str) -> Option<&Origin> {
        let list = self.config.get("resources")?.as_array()?;
        list.iter().zip(&self.resources).find_map(|(r, o)| {
            let name = r.get("metadata")?.get("name")?.as_str()?;
            let ns = self.namespace_of(r);
            (r.get("kind")?.as_str()? == kind && format!("{ns}/{name}") == id).then_some(o)
        })
    }

    /// A resource's namespace as the filter reads it: `metadata.namespace`, else
    /// `defaultNamespace`, else [`config::DEFAULT_NAMESPACE`].
    pub fn namespace_of<'a>(&'a self, resource: &'a Value) -> &'a str {
        resource
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .or_else(|| self.config.get("defaultNamespace").and_then(Value::as_str))
            .unwrap_or(config::DEFAULT_NAMESPACE)
    }
}

/// `resources[12].spec...` → `(12, ".spec...")`.
fn resource_index(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix("resources[")?;
    let (n, rest) = rest.split_once(']')?;
    Some((n.parse().ok()?, rest))
}

/// A file's documents: JSON for `.json` files and text starting with `{`, YAML (several
/// documents separated by `---`) otherwise. Empty YAML documents are skipped. Both refuse
/// duplicate keys, as the filter does (serde-saphyr does so by default).
fn parse_documents(file: &str, text: &str) -> Result<Vec<Value>, ConfigError> {
    let is_json = Path::new(file)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    if is_json {
        meshrules::config::json::parse_unique(text.as_bytes()).map(|v| vec![v])
    } else {
        serde_saphyr::from_multiple::<Value>(text)
            .map_err(|e| ConfigError::new("", format!("not valid YAML: {}", e.without_snippet())))
    }
}
