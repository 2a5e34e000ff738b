use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cargo;

/// `cargo xtask bench`: times daa's train steps (`daa bench`) and the same steps in PyTorch
/// (`scripts/bench_torch.py`, the project's own re-implementation) in one run, and prints the
/// medians with their ratio. Needs `pip install torch` for the comparison.
#[derive(clap::Args)]
pub struct Bench {
    /// Sizes: cpu (the denoise preset's networks) or paper.
    #[arg(long, default_value = "cpu")]
    preset: String,
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

impl Bench {
    pub fn run(self) -> Result<()> {
        if self.ops {
            crate::run_echoed(cargo(["bench", "-p", "daa-kernels"]))?;
        }
        let steps = self.steps.to_string();
        let mut daa = cargo(["run", "--release", "-q", "-p", "daa-cli"]);
        if self.cuda {
            daa.args(["--features", "cuda"]);
        }
        daa.args(["--", "bench", "--preset", &self.preset, "--steps", &steps]);
        if self.cuda {
            daa.args(["--device", "cuda:0"]);
        }
        let ours = run_lines(daa)?;
        let threads = ours
            .first()
            .and_then(|l| field(l, "threads"))
            .unwrap_or("0")
            .to_string();
        let mut torch = Command::new("python3");
        torch.args([
            "scripts/bench_torch.py",
            "--preset",
            &self.preset,
            "--steps",
            &steps,
            "--threads",
            &threads,
        ]);
        if self.cuda {
            torch.args(["--device", "cuda"]);
        }
        let theirs = run_lines(torch).unwrap_or_else(|e| {
            eprintln!("PyTorch comparison skipped: {e:#}");
            Vec::new()
        });
        println!("\n| preset | method | daa ms/step | PyTorch ms/step | daa / PyTorch |\n|---|---|---|---|---|");
        for line in &ours {
            let method = field(line, "method").unwrap_or("?");
            let ms: f64 = field(line, "median_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            let torch_ms: f64 = theirs
                .iter()
                .find(|l| field(l, "method") == Some(method))
                .and_then(|l| field(l, "median_ms")?.parse().ok())
                .unwrap_or(f64::NAN);
            println!(
                "| {} | {method} | {ms:.1} | {torch_ms:.1} | {:.2} |",
                self.preset,
                ms / torch_ms
            );
        }
        println!(
            "\n(medians of {} steps after warm-up; {threads} CPU threads each)",
            self.steps
        );
        Ok(())
    }
}
