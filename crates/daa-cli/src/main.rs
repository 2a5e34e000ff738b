//! `daa`: train restoration networks with noise-space domain adaptation, evaluate them, and
//! restore photos. A thin layer over `daa-train`.

mod alloc;
mod cmd;

// Training allocates and frees large tensors every step; glibc's malloc hands big blocks back
// to the kernel each time, and page faults plus page zeroing then took ~20% of a CPU step.
// mimalloc keeps them for reuse (tuned in `alloc`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "daa",
    version,
    about = "Noise-space domain adaptation for image restoration"
)]
struct Cli {
    /// Device: cpu or cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Log more (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// CPU threads for tensor ops, at least 1 (default: RAYON_NUM_THREADS, else one
    /// per core). Several runs side by side on a small machine go faster with 1 each.
    #[arg(short = 'j', long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a restorer (from a preset, a config file, and flags that override fields).
    Train(Box<cmd::train::Args>),
    /// Evaluate a restorer checkpoint on held-out pairs: PSNR/SSIM of input and restored.
    Eval(cmd::eval::Args),
    /// Restore an image or a folder of images with a restorer checkpoint.
    Restore(cmd::restore::Args),
    /// Small experiments that check properties of the method.
    Experiment(cmd::experiment::Args),
    /// Time full training steps on random data (see `cargo xtask bench`).
    Bench(cmd::bench::Args),
    /// Write a sheet of each task's clean / source / target images for one photo.
    Samples(cmd::samples::Args),
    /// Datasets in their authors' layouts (SIDD, GoPro, RealBlur-J, Rain13K, SPA-Data).
    Data(cmd::data::Args),
}

fn main() {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    // candle reads these when its thread pools and gemm first run, which is after this
    // point; nothing else runs yet, so setting the environment is race-free.
    if let Some(n) = cli.threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // CANDLE_NUM_THREADS sizes candle's barrier pool, which runs only elementwise ops (memory
    // bound); its caller busy-waits for the workers without ever yielding, and with other
    // processes on the cores that spin took 43% of a DA step's samples (docs/performance.md).
    // One thread for those ops unless the user asks otherwise; gemm, the convs and the
    // GroupNorm run on the rayon pool (RAYON_NUM_THREADS, -j).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a log file or pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not make logging print (and so panic): see cmd::note.
        .log_internal_errors(false)
        .init();
    let result = cmd::parse_device(&cli.device).and_then(|device| match cli.cmd {
        Cmd::Train(a) => a.run(&device),
        Cmd::Eval(a) => a.run(&device),
        Cmd::Restore(a) => a.run(&device),
        Cmd::Experiment(a) => a.run(&device),
        Cmd::Bench(a) => a.run(&device),
        Cmd::Samples(a) => a.run(),
        Cmd::Data(a) => a.run(),
    });
    if let Err(e) = result {
        if let Some(daa_train::Error::Interrupted { .. }) = e.downcast_ref::<daa_train::Error>() {
            cmd::note(&e);
            std::process::exit(130);
        }
        cmd::note(format!("error: {}", one_line(&cmd::chain(&e))));
        std::process::exit(1);
    }
}

/// The error message without the backtrace candle appends when RUST_BACKTRACE is set.
fn one_line(msg: &str) -> String {
    let is_frame = |l: &str| {
        let t = l.trim_start();
        t.split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            || t.starts_with("at ")
    };
    msg.lines()
        .take_while(|l| !is_frame(l))
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string()
}
