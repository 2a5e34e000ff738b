use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cargo;

/// `cargo xtask bench`: times daa's train steps (`daa bench`) and the same steps in PyTorch
/// (`scripts/bench_torch.py`, the project's own re-implementation) in one run, interleaved
/// (for each preset, thread count and method: daa, then PyTorch, each in its own process so
/// that its peak RSS is its own), and prints the medians with their ratio, the achieved
/// GFLOP/s of each side (FLOPs of a step counted once by PyTorch's flop counter on the same
/// networks) and each side's peak RSS. Needs `pip install torch` for the comparison.
#[derive(clap::Args)]
pub struct Bench {
    /// Comma-separated sizes: cpu (the denoise preset's networks), paper-small (the paper
    /// networks at batch 2, 64x64), paper (batch 24, 128x128).
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Comma-separated methods: vanilla, da.
    #[arg(long, default_value = "vanilla,da")]
    methods: String,
    /// Comma-separated CPU thread counts, each a separate run of both sides.
    #[arg(long, default_value = "2,1")]
    threads: String,
    /// Build with CUDA and run on cuda:0 (PyTorch on cuda too).
    #[arg(long)]
    cuda: bool,
    /// Timed steps per method.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Also run the criterion benches of each kernel against its reference (`cargo bench -p daa-kernels`).
    #[arg(long)]
    ops: bool,
}

/// The value of `"key": <number or string>` in a one-line JSON object (xtask stays free of
/// serde; the lines come from our own two programs).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

fn run_lines(mut c: Command) -> Result<Vec<String>> {
    let shown = format!("{c:?}");
    eprintln!("$ {shown}");
    let out = c.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(String::from)
        .collect())
}

/// One row of the table: a preset, method and thread count, both sides.
struct Row {
    preset: String,
    method: String,
    threads: String,
    ours: Option<String>,
    theirs: Option<String>,
}

fn num(line: &Option<String>, key: &str) -> f64 {
    line.as_deref()
        .and_then(|l| field(l, key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Bench {
    pub fn run(self) -> Result<()> {
        if self.ops {
            crate::run_echoed(cargo(["bench", "-p", "daa-kernels"]))?;
        }
        let mut build = cargo(["build", "--release", "-q", "-p", "daa-cli"]);
        if self.cuda {
            build.args(["--features", "cuda"]);
        }
        crate::run_echoed(build)?;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let daa_bin = root.join("target/release/daa");
        let steps = self.steps.to_string();
        let mut rows = Vec::new();
        for preset in self.preset.split(',') {
            for threads in self.threads.split(',') {
                for method in self.methods.split(',') {
                    let mut daa = Command::new(&daa_bin);
                    daa.args(["-j", threads]);
                    if self.cuda {
                        daa.args(["--device", "cuda:0"]);
                    }
                    daa.args([
                        "bench",
                        "--preset",
                        preset,
                        "--methods",
                        method,
                        "--steps",
                        &steps,
                    ]);
                    let ours = run_lines(daa)?.into_iter().next();
                    let mut torch = Command::new("python3");
                    torch.arg(root.join("scripts/bench_torch.py")).args([
                        "--preset",
                        preset,
                        "--methods",
                        method,
                        "--steps",
                        &steps,
                        "--threads",
                        threads,
                    ]);
                    if self.cuda {
                        torch.args(["--device", "cuda"]);
                    }
                    let theirs = run_lines(torch)
                        .unwrap_or_else(|e| {
                            eprintln!("PyTorch comparison skipped: {e:#}");
                            Vec::new()
                        })
                        .into_iter()
                        .next();
                    rows.push(Row {
                        preset: preset.to_string(),
                        method: method.to_string(),
                        threads: threads.to_string(),
                        ours,
                        theirs,
                    });
                }
            }
        }
        println!(
            "\n| preset | method | threads | daa ms/step | PyTorch ms/step | daa / PyTorch | GFLOP/step | daa GFLOP/s | PyTorch GFLOP/s | daa peak RSS MB | PyTorch peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &rows {
            let (ms, torch_ms) = (num(&r.ours, "median_ms"), num(&r.theirs, "median_ms"));
            let gflop = num(&r.theirs, "gflop");
            println!(
                "| {} | {} | {} | {ms:.1} | {torch_ms:.1} | {:.2} | {gflop:.2} | {:.1} | {:.1} | {:.0} | {:.0} |",
                r.preset,
                r.method,
                r.threads,
                ms / torch_ms,
                gflop / ms * 1e3,
                gflop / torch_ms * 1e3,
                num(&r.ours, "peak_rss_mb"),
                num(&r.theirs, "peak_rss_mb"),
            );
        }
        println!(
            "\n(medians of {} steps after warm-up; FLOPs of a step counted by PyTorch's flop counter)",
            self.steps
        );
        Ok(())
    }
}
