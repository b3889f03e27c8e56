//! The `spindle` binary: the operator (`run`) and its helper commands.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "spindle", version, about = "Kubernetes operator for Spin WebAssembly apps")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD Spindle serves as YAML (a multi-document stream), or
    /// write one file per CRD into a directory.
    Crd {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir } => print_crds(out_dir),
    }
}

fn print_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = spindle::api::crds();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(spindle::api::crd_file_name(crd));
                let yaml = spindle::api::crd_yaml(crd).context("serializing CRD")?;
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            for crd in &crds {
                print!("---\n{}", spindle::api::crd_yaml(crd).context("serializing CRD")?);
            }
        }
    }
    Ok(())
}
