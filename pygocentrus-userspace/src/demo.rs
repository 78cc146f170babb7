//! `pygocentrus demo` (filled in below).
use anyhow::Result;

use crate::cli::DemoArgs;

pub async fn run(_args: DemoArgs) -> Result<()> {
    anyhow::bail!("demo not built yet")
}
