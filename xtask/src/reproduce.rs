use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, run_echoed};

/// `cargo xtask reproduce --task denoise|deblur|derain|all --budget cpu|gpu`: the paper's
/// comparison on the project's synthetic-to-"real" domains. With one seed, step count and
/// backbone it trains vanilla, DA, DA without channel shuffling, DA without the contrastive
/// term, and an oracle (supervised on target pairs), evaluates each restorer on the held-out
/// photos degraded like the target and like the source domain, and writes
/// `runs/reproduce-<task>/results.md` and `results.json`.
#[derive(clap::Args)]
pub struct Reproduce {
    /// Which task (or all).
    #[arg(long, value_parser = ["denoise", "deblur", "derain", "all"])]
    task: String,
    /// cpu: the presets' CPU networks on this machine; gpu: a CUDA build on cuda:0.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"])]
    budget: String,
    /// Steps per method (default: 200 on cpu, 2000 on gpu).
    #[arg(long)]
    steps: Option<usize>,
    /// The seed shared by every method.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const METHODS: [(&str, &[&str]); 5] = [
    ("vanilla", &["--method", "vanilla"]),
    ("da", &["--method", "da"]),
    ("da-no-shuffle", &["--method", "da", "--no-shuffle"]),
    ("da-no-contrastive", &["--method", "da", "--no-contrastive"]),
    ("oracle", &["--oracle"]),
];

/// A number field of a one-line JSON object printed by `daa eval --json`.
fn num(line: &str, key: &str) -> f64 {
    line.find(&format!("\"{key}\":"))
        .map(|i| &line[i + key.len() + 3..])
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

impl Reproduce {
    pub fn run(self) -> Result<()> {
        let gpu = self.budget == "gpu";
        let mut build = cargo(["build", "--release", "-p", "daa-cli"]);
        if gpu {
            build.args(["--features", "cuda"]);
        }
        run_echoed(build)?;
        let daa = PathBuf::from("target/release/daa");
        let steps = self.steps.unwrap_or(if gpu { 2000 } else { 200 });
        let tasks: Vec<&str> = if self.task == "all" {
            vec!["denoise", "deblur", "derain"]
        } else {
            vec![self.task.as_str()]
        };
        for task in tasks {
            self.task_run(&daa, task, steps, gpu)?;
        }
        Ok(())
    }

    fn task_run(&self, daa: &Path, task: &str, steps: usize, gpu: bool) -> Result<()> {
        let root = PathBuf::from(format!("runs/reproduce-{task}"));
        std::fs::create_dir_all(&root)?;
        let device = if gpu { "cuda:0" } else { "cpu" };
        let (steps_s, seed_s) = (steps.to_string(), self.seed.to_string());
        let mut rows = Vec::new();
        for (name, flags) in METHODS {
            let dir = root.join(name);
            if dir.join(format!("restorer-{steps}.safetensors")).exists() {
                eprintln!("{name}: reusing {dir:?}");
            } else {
                let mut c = Command::new(daa);
                c.args([
                    "train", "--preset", task, "--steps", &steps_s, "--seed", &seed_s, "--device",
                    device,
                ]);
                c.args([
                    "--run-dir",
                    dir.to_str().unwrap_or_default(),
                    "--checkpoint-every",
                    "0",
                ])
                .args(flags);
                run_echoed(c)?;
            }
            let ckpt = dir.join(format!("restorer-{steps}.safetensors"));
            let mut scores = Vec::new();
            for domain in ["target", "source"] {
                let out = Command::new(daa)
                    .args([
                        "eval", "--preset", task, "--domain", domain, "--json", "--device", device,
                    ])
                    .args(["--checkpoint", ckpt.to_str().unwrap_or_default()])
                    .output()
                    .with_context(|| format!("evaluating {ckpt:?}"))?;
                if !out.status.success() {
                    bail!("daa eval failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                scores.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
            rows.push((name, scores));
        }
        let psnr_t = |name: &str| {
            rows.iter()
                .find(|r| r.0 == name)
                .map(|r| num(&r.1[0], "psnr"))
                .unwrap_or(f64::NAN)
        };
        let (van, da, ora) = (psnr_t("vanilla"), psnr_t("da"), psnr_t("oracle"));
        let mut md = format!(
            "# {task}: synthetic-to-target comparison\n\n`cargo xtask reproduce --task {task} --budget {}` \
             ({steps} steps, seed {}, the `{task}` preset's networks). Held-out photos degraded like the \
             target (\"real\") and the source (synthetic) domain; PSNR (dB) / SSIM.\n\n\
             | method | target PSNR | target SSIM | source PSNR | source SSIM |\n|---|---|---|---|---|\n",
            self.budget, self.seed
        );
        let first = &rows[0].1;
        md += &format!(
            "| (degraded input) | {:.2} | {:.4} | {:.2} | {:.4} |\n",
            num(&first[0], "input_psnr"),
            num(&first[0], "input_ssim"),
            num(&first[1], "input_psnr"),
            num(&first[1], "input_ssim")
        );
        for (name, s) in &rows {
            md += &format!(
                "| {name} | {:.2} | {:.4} | {:.2} | {:.4} |\n",
                num(&s[0], "psnr"),
                num(&s[0], "ssim"),
                num(&s[1], "psnr"),
                num(&s[1], "ssim")
            );
        }
        md += &format!(
            "\nFraction of the vanilla-to-oracle gap (target PSNR) closed by DA: {:.2} \
             ((DA - vanilla) / (oracle - vanilla) = ({da:.2} - {van:.2}) / ({ora:.2} - {van:.2})).\n",
            (da - van) / (ora - van)
        );
        let json: Vec<String> = rows
            .iter()
            .map(|(n, s)| {
                format!(
                    "{{\"method\": \"{n}\", \"target\": {}, \"source\": {}}}",
                    s[0], s[1]
                )
            })
            .collect();
        std::fs::write(
            root.join("results.json"),
            format!("[\n  {}\n]\n", json.join(",\n  ")),
        )?;
        std::fs::write(root.join("results.md"), &md)?;
        println!("{md}");
        Ok(())
    }
}
