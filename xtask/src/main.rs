//! Project tasks: `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).

mod bench;
mod stack;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "pygocentrus project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Measure the classifier's per-packet cost (BPF_PROG_TEST_RUN) and the
    /// TCP throughput of a bridge with and without it; print the results and
    /// rewrite the generated section of BENCHMARKS.md. Needs root.
    Bench(bench::BenchArgs),
    /// Measure the classifier's cost per packet on live traffic (iperf3
    /// TCP and 64-byte UDP, redis-benchmark) from the kernel's BPF
    /// statistics, beside an empty classifier on the same bridge ports;
    /// print the results and rewrite their section of BENCHMARKS.md. Needs
    /// root.
    BenchLive(bench::live::LiveArgs),
    /// Run the integration tests under Debian's 6.1 (netlink fallback) and
    /// 6.12 (TCX) kernels in QEMU; arguments after `--` go to every test
    /// executable.
    VmTest(vm::VmTestArgs),
    /// pygocentrus beside netem on the same path, in one QEMU guest: ping
    /// error and spread at 20 ms, iperf3 at 10 ms, and iperf3 with 1, 1 000
    /// and 10 000 rules vs netem behind as many u32 filters; print the
    /// results and rewrite their section of BENCHMARKS.md.
    BenchVm(vm::bench::BenchVmArgs),
    /// How many bytes of the 512-byte BPF stack each classifier uses, from
    /// the object the tool embeds; `--max N` fails above N.
    Stack(stack::StackArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Bench(args) => bench::run(&args),
        Task::BenchLive(args) => bench::live::run(&args),
        Task::VmTest(args) => vm::run(&args),
        Task::BenchVm(args) => vm::bench::run(&args),
        Task::Stack(args) => stack::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
