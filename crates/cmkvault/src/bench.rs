//! `cmkvault bench`: load generator for one key operation, compared with the raw crypto limit.

use anyhow::{bail, Result};
use clap::Args;

/// Arguments of `cmkvault bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Operation: unwrapkey, wrapkey, sign, decrypt or get.
    pub op: String,
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> Result<()> {
    bail!("bench {} is not implemented yet", args.op)
}
