use std::process::ExitCode;

use clap::Parser;
use hookline::cli::{self, Cli};

// glibc's malloc showed up as about a tenth of the server's CPU under load
// (many small, short-lived allocations across threads); mimalloc halves that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = cli::init_logging(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(cli::run(cli));
    drop(runtime);
    if let Some(exporter) = traces {
        exporter.shutdown();
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookline: {e:#}");
            ExitCode::FAILURE
        }
    }
}
