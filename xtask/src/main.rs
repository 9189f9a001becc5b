//! Project chores, run as `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
//!
//! # Tasks
//! - `codegen`: writes every generated file from the Rust types.
//! - `codegen --check`: regenerates in memory and fails, naming each file, if any checked-in
//!   copy is stale or missing. CI runs this.
//!
//! # Generated files
//! - `docs/schema/tidings.schema.json`: one JSON Schema (2020-12) document whose `$defs` hold
//!   every wire type from `tidings_proto::schema_roots()` ([`schema`]).
//! - `sdk-ts/src/protocol.ts`: TypeScript declarations converted from that document ([`ts`]).
//! - `tidings.example.toml`: the example configuration from `tidings::config::example_toml()`.

mod schema;
mod ts;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  codegen           write the JSON Schema, the TypeScript declarations and the example config
  codegen --check   fail if any generated file is stale (for CI)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["codegen"] => codegen(Mode::Write),
        ["codegen", "--check"] => codegen(Mode::Check),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Write,
    Check,
}

/// One generated file: its path relative to the workspace root and its full contents.
struct Generated {
    path: &'static str,
    contents: String,
}

/// Everything `codegen` writes, computed in memory.
fn generate() -> Result<Vec<Generated>> {
    let doc = schema::merge(tidings_proto::schema_roots()).context("merging the schemas")?;
    let typescript = ts::to_typescript(&doc).context("converting the schema to TypeScript")?;
    Ok(vec![
        Generated {
            path: "docs/schema/tidings.schema.json",
            contents: schema::to_pretty(&doc),
        },
        Generated {
            path: "sdk-ts/src/protocol.ts",
            contents: typescript,
        },
        Generated {
            path: "tidings.example.toml",
            contents: tidings::config::example_toml(),
        },
    ])
}

fn codegen(mode: Mode) -> Result<()> {
    let root = workspace_root();
    let mut stale = Vec::new();
    for file in generate()? {
        let path = root.join(file.path);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(file.contents.as_str()) {
            continue;
        }
        match mode {
            Mode::Check => {
                let why = if current.is_none() {
                    "missing"
                } else {
                    "stale"
                };
                eprintln!("{}: {why}", file.path);
                stale.push(file.path);
            }
            Mode::Write => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&path, &file.contents)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("Wrote {}.", file.path);
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "{} generated file(s) out of date: {}; run `cargo xtask codegen` and commit the result",
            stale.len(),
            stale.join(", ")
        );
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same comparison as `cargo xtask codegen --check`, so `cargo test` catches a
    /// forgotten regeneration too.
    #[test]
    fn generated_files_are_current() {
        let root = workspace_root();
        for file in generate().unwrap() {
            let current = std::fs::read_to_string(root.join(file.path)).unwrap_or_default();
            assert!(
                current == file.contents,
                "{} is stale: run `cargo xtask codegen`",
                file.path
            );
        }
    }

    #[test]
    fn every_root_is_declared_in_typescript() {
        let out = generate().unwrap();
        let typescript = &out
            .iter()
            .find(|f| f.path.ends_with(".ts"))
            .unwrap()
            .contents;
        for (name, _) in tidings_proto::schema_roots() {
            assert!(
                typescript.contains(&format!("export interface {name} "))
                    || typescript.contains(&format!("export type {name} ")),
                "{name} is missing from protocol.ts"
            );
        }
    }
}
