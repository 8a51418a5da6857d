//! `stocksync-oversell-sim`: one seeded business day, replayed under periodic sync,
//! stocksync's feed without reservation and stocksync orders (through a real collector);
//! prints how many orders each oversold.

use clap::Parser;
use stocksync_tools::oversell::{self, Size};

#[derive(Parser)]
#[command(
    version,
    about = "Oversell simulation of one business day (see docs/SIMULATION.md)"
)]
struct Args {
    /// Seed of the day; the same seed gives the same day.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// SKUs in the catalog (long tail; the first 5 are hot).
    #[arg(long, default_value_t = 200)]
    skus: usize,
    /// Customers during the day.
    #[arg(long, default_value_t = 2400)]
    orders: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let size = Size {
        seed: args.seed,
        skus: args.skus,
        orders: args.orders,
    };
    let started = std::time::Instant::now();
    let rows = oversell::run(size)?;
    println!("{}", oversell::table(size, &rows));
    eprintln!("simulated in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
