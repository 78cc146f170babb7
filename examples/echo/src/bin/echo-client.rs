//! `echo-client`: `COUNT` messages to `ADDR:PORT`, one line each (ok,
//! mismatch, ECONNRESET...) and a summary. It exits with 2 on bad settings
//! and 0 otherwise: failed messages are what it is there to show.

use std::process::ExitCode;

use echo_example::{EchoSettings, run_messages};
use example_support::{EXIT_SETUP, process_env};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let settings = match EchoSettings::from_env(&process_env()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo-client: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    match run_messages(&settings, &mut std::io::stdout()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-client: writing the report: {e}");
            ExitCode::FAILURE
        }
    }
}
