//! Writes the shell completions (bash, zsh, fish) and the man pages that tcptrace's clap
//! definition describes into DIR/completions and DIR/man. `cargo xtask dist` runs it.
//!
//! An example rather than a subcommand: the generators stay out of the shipped binary, and
//! they read the very `Cli` the binary parses with, so the pages cannot drift from it.

use std::{fs, path::PathBuf};

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell;
use tcptrace::cli::Cli;

fn main() -> anyhow::Result<()> {
    let dir: PathBuf =
        std::env::args_os().nth(1).context("usage: dist-docs DIR (e.g. target/dist)")?.into();
    let completions = dir.join("completions");
    let man = dir.join("man");
    for d in [&completions, &man] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut cmd = <Cli as CommandFactory>::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "tcptrace", &completions)
            .with_context(|| format!("writing the {shell} completions"))?;
        println!("{}", path.display());
    }
    // tcptrace.1 plus one page per visible subcommand (tcptrace-serve.1, ...).
    clap_mangen::generate_to(<Cli as CommandFactory>::command(), &man)
        .context("writing the man pages")?;
    let mut pages: Vec<PathBuf> =
        fs::read_dir(&man)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(())
}
