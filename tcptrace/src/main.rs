use std::process::ExitCode;

use clap::Parser as _;
use tcptrace::{
    cli::{Cli, Command},
    cmd::Outcome,
};

fn main() -> ExitCode {
    // Bad flags exit 2 with clap's message and usage.
    let command = Cli::parse().command();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    raise_file_limit();
    if let Command::Report(args) = &command {
        // Reading a file and writing a page: no runtime, no privileges.
        return tcptrace::cmd::report::run(args).map_or_else(
            |e| {
                eprintln!("tcptrace: error: {e:#}");
                ExitCode::from(Outcome::BadInput.code())
            },
            |()| ExitCode::SUCCESS,
        );
    }
    if let Command::Load(args) = command {
        // The load generator is plain threads; it needs no async runtime.
        return tcptrace::load::run(args).map_or_else(
            |e| {
                eprintln!("tcptrace load: error: {e:#}");
                ExitCode::FAILURE
            },
            |()| ExitCode::SUCCESS,
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcptrace: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Watch(args) => {
                tcptrace::cmd::watch::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Top(args) => tcptrace::cmd::top::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Events(args) => {
                tcptrace::cmd::events::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Serve(args) => {
                tcptrace::cmd::serve::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            // A check that could not measure has no verdict: that is not "the claim failed".
            Command::Check(args) => Ok(tcptrace::cmd::check::run(args)
                .await
                .map_err(|e| eprintln!("tcptrace: error: {e:#}"))
                .map_or(Outcome::BadInput.into(), ExitCode::from)),
            // As with check: a demo that could not run has no verdict.
            Command::Demo(args) => Ok(tcptrace::cmd::demo::run(args)
                .await
                .map_err(|e| eprintln!("tcptrace: error: {e:#}"))
                .map_or(Outcome::BadInput.into(), ExitCode::from)),
            Command::Load(_) | Command::Report(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    result.unwrap_or_else(|e| {
        eprintln!("tcptrace: error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Raises the soft open-file limit to the hard one (said at debug level): `load` and `demo`
/// hold a descriptor per connection, `serve` one per HTTP client besides its own, and the
/// soft limit is often 1,024 (systemd's default) when the hard one is far higher.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            log::debug!("cannot read the open-file limit (RLIMIT_NOFILE): {e}");
            return;
        }
    };
    if soft >= hard {
        log::debug!("the open-file limit (RLIMIT_NOFILE) is {soft}, its hard limit already");
    } else if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        log::debug!("cannot raise the open-file limit (RLIMIT_NOFILE) from {soft} to {hard}: {e}");
    } else {
        log::debug!("raised the open-file limit (RLIMIT_NOFILE) from {soft} to {hard}");
    }
}
