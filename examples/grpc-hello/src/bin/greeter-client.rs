//! `greeter-client`: `COUNT` calls of `SayHello(NAME)` to `ADDR:PORT`, one
//! line each (call number, gRPC status code, latency) and a summary. It
//! exits with 2 on bad settings and 0 otherwise: failed calls are what it
//! is there to show, not an error of its own.

use std::process::ExitCode;

use example_support::{EXIT_SETUP, process_env};
use grpc_hello::{ClientSettings, RunError, run_calls};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let settings = match ClientSettings::from_env(&process_env()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("greeter-client: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    match run_calls(&settings, &mut std::io::stdout()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e @ RunError::Address(_)) => {
            eprintln!("greeter-client: {e}");
            ExitCode::from(EXIT_SETUP)
        }
        Err(e) => {
            eprintln!("greeter-client: {e}");
            ExitCode::FAILURE
        }
    }
}
