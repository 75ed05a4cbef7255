//! `loadgen`: Telegraft's load generator. Today it reads and checks scenario files; running
//! them against a cluster (Goose, open and closed models, HDR histograms, results/) is the
//! next step (issue 4).

use loadgen::scenario;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load generator for a Telegraft chat cluster")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check scenario files without running them; prints the effective scenario with --print.
    Validate {
        /// Scenario files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a field: `--set load.duration=10s` (repeatable).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        overrides: Vec<String>,
        /// Print the effective scenario (after overrides) as YAML.
        #[arg(long)]
        print: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Validate {
            files,
            overrides,
            print,
        } => {
            let mut failed = false;
            for file in &files {
                match scenario::Scenario::load(file, &overrides) {
                    Ok(s) => {
                        println!(
                            "{}: ok ({}, {} replicas)",
                            file.display(),
                            s.name,
                            s.replicas
                        );
                        if print {
                            print!("{}", s.to_yaml());
                        }
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
