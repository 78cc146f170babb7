use std::process::ExitCode;

use clap::{Parser as _, error::ErrorKind};
use pygocentrus::{
    UsageError,
    commands::{
        self,
        cli::{Cli, Command},
    },
    datapath::guard,
};

/// Bad input: one line on stderr, nothing attached.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pygocentrus: {}", one_line(&e.to_string()));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pygocentrus: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Attach(args) => commands::attach::run(*args).await,
            Command::Serve(args) => commands::serve::run(*args).await,
            Command::Set(args) => commands::client::set(*args).await,
            Command::Status(args) => commands::client::status(args).await,
            Command::Reset(args) => commands::client::reset(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Guard(args) => guard::run(&args.run, &args.state).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("pygocentrus: error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("pygocentrus: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message without its usage and help hints, on one line.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
