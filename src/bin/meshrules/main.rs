//! `meshrules`: checks, bundles and explains Istio rules for the meshrules filter, on the host,
//! with the filter's own validation (`compile`) and decision code (`engine`, `authz`, `authn`).

#[macro_use]
mod output;
mod bundle;
mod cluster_policy;
mod envoy;
mod explain;
mod input;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use input::{Inputs, Problem};

#[derive(Parser)]
#[command(
    name = "meshrules",
    version,
    about = "Check, bundle and explain Istio rules for the meshrules Envoy filter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate Istio YAML or pluginConfig JSON exactly as the filter does; every problem and
    /// warning is printed with file, document and field path.
    Check(CheckArgs),
    /// Turn Istio YAML into the filter's pluginConfig JSON, a WasmPlugin, or an Envoy bootstrap.
    Bundle(Box<bundle::BundleArgs>),
    /// Show which VirtualService and route a request takes and what the filter does with it.
    Explain(Box<explain::ExplainArgs>),
}

/// The files `check` and `bundle` read: together they form one configuration.
#[derive(Args)]
pub struct ConfigFiles {
    /// Istio YAML (documents separated by `---`), pluginConfig JSON, or a WasmPlugin; `-`
    /// reads standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigFiles,
    /// Exit with status 1 when there is any warning, as for a problem.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    /// The filter's configuration (Envoy's `configuration` / a WasmPlugin's `pluginConfig`).
    #[value(alias = "json")]
    Pluginconfig,
    /// An Istio `extensions.istio.io/v1alpha1` WasmPlugin.
    Wasmplugin,
    /// A complete Envoy bootstrap: listener, the filter, cluster_header routes, clusters.
    Envoy,
}

/// Exit status for a configuration with problems (2 is clap's usage error).
const PROBLEMS: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(c) => check(&c),
        Command::Bundle(args) => bundle::run(&args),
        Command::Explain(args) => explain::run(&args),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Problems(problems)) => {
            for p in &problems {
                out!("{p}");
            }
            let files: std::collections::BTreeSet<&str> =
                problems.iter().map(|p| p.file.as_str()).collect();
            err!(
                "meshrules: {} problem{} in {} file{}",
                problems.len(),
                plural(problems.len()),
                files.len(),
                plural(files.len())
            );
            ExitCode::from(PROBLEMS)
        }
        Err(Failure::Other(message)) => {
            err!("meshrules: {message}");
            ExitCode::from(PROBLEMS)
        }
    };
    match output::finish() {
        Ok(()) => code,
        Err(message) => {
            err!("meshrules: {message}");
            ExitCode::from(PROBLEMS)
        }
    }
}

/// Why a command did not succeed.
pub enum Failure {
    /// The configuration has problems: each is printed on its own line.
    Problems(Vec<Problem>),
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Reads and validates `files`; warnings go to standard error, which leaves standard output to
/// what `bundle` and `explain` print.
pub fn validated(files: &[String]) -> Result<input::Validated, Failure> {
    validated_as(files, &meshrules::compile::Anonymous)
}

/// As [`validated`], compiled for the proxy `identity` describes (`explain --proxy ...`).
pub fn validated_as(
    files: &[String],
    identity: &dyn meshrules::compile::Identity,
) -> Result<input::Validated, Failure> {
    let v = Inputs::read(files)
        .validate_as(identity)
        .map_err(Failure::Problems)?;
    for w in &v.warnings {
        err!("{w}");
    }
    Ok(v)
}

/// `check` prints warnings where it prints problems, on standard output, then the summary.
fn check(args: &CheckArgs) -> Result<(), Failure> {
    let v = Inputs::read(&args.config.files)
        .validate()
        .map_err(Failure::Problems)?;
    for w in &v.warnings {
        out!("{w}");
    }
    if args.strict && !v.warnings.is_empty() {
        return Err(Failure::Other(format!(
            "{} warning{} (--strict)",
            v.warnings.len(),
            plural(v.warnings.len())
        )));
    }
    let kinds: Vec<String> = v
        .inputs
        .kinds()
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let resources: usize = v.inputs.kinds().values().sum();
    out!(
        "ok: {} file{}, {} document{}, {} resource{}{}, {} warning{}",
        v.inputs.files,
        plural(v.inputs.files),
        v.inputs.documents,
        plural(v.inputs.documents),
        resources,
        plural(resources),
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        v.warnings.len(),
        plural(v.warnings.len())
    );
    Ok(())
}
