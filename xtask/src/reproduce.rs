use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::plot;
use crate::{cargo, run_echoed};

/// `cargo xtask reproduce --task denoise|deblur|derain|all --budget cpu|gpu`: the paper's
/// comparison on the project's synthetic-to-"real" domains. With one seed, step count and
/// backbone it trains vanilla, DA, DA without channel shuffling, DA without the contrastive
/// term, DANN (the feature-space baseline), and an oracle (supervised on target pairs),
/// evaluates each restorer on the held-out photos degraded like the target and like the source
/// domain, and writes into `runs/reproduce-<task>/` (`runs/reproduce-<task>-<backbone>/` with
/// `--backbone`): `results.md`, `results.json`, `loss_rec.png`,
/// `loss_diffusion.png`, `grid.png` (input / vanilla / DA / oracle / ground truth on the
/// held-out target photos) and `real.png` (input / vanilla / DA on real degraded photos).
/// With several `--seeds` the table gives each seed and the spread between them.
#[derive(clap::Args)]
pub struct Reproduce {
    /// Which task (or all).
    #[arg(long, value_parser = ["denoise", "deblur", "derain", "all"])]
    task: String,
    /// cpu: the presets' CPU networks on this machine; gpu: a CUDA build on cuda:0.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"])]
    budget: String,
    /// Steps per method (default: 300 on cpu, 2000 on gpu).
    #[arg(long)]
    steps: Option<usize>,
    /// Seeds, comma-separated; every method runs with each.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Methods to run (comma-separated): vanilla, da, da-no-shuffle, da-no-contrastive, dann,
    /// oracle. Default: all six for the first seed, vanilla and DA for further seeds.
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// The restorer of every run: a name at the preset's scale (unet, dncnn, nafnet, restormer,
    /// uformer) or with its scale (restormer-cpu); default: the preset's (the CPU U-Net). The
    /// runs go to their own folder, `runs/reproduce-<task>-<backbone>/`.
    #[arg(long)]
    backbone: Option<String>,
    /// Real degraded photos (no ground truth) for `real.png`; default: datasets/real for
    /// deblur (a real camera-shake photo), none for denoise and derain (no CC0 real noisy
    /// or rainy photos ship with the project; see scripts/fetch_photos.py extra).
    #[arg(long)]
    real_dir: Option<PathBuf>,
}

const METHODS: [(&str, &[&str]); 6] = [
    ("vanilla", &["--method", "vanilla"]),
    ("da", &["--method", "da"]),
    ("da-no-shuffle", &["--method", "da", "--no-shuffle"]),
    ("da-no-contrastive", &["--method", "da", "--no-contrastive"]),
    ("dann", &["--method", "dann"]),
    ("oracle", &["--oracle"]),
];

/// True for the rows that train a diffusion network (DA and its ablations), whose noise losses
/// `loss_diffusion.png` plots; not `dann`, whose name also starts with "da".
fn trains_diffusion(method: &str) -> bool {
    method == "da" || method.starts_with("da-")
}

/// The folder of a task's runs: `runs/reproduce-<task>`, or `runs/reproduce-<task>-<backbone>`
/// so that runs of another restorer are never reused for this one. The name becomes part of a
/// path, so only lowercase letters, digits and '-' are accepted (what `daa train --backbone`
/// takes).
fn run_root(task: &str, backbone: Option<&str>) -> Result<PathBuf> {
    match backbone {
        None => Ok(PathBuf::from(format!("runs/reproduce-{task}"))),
        Some(b)
            if !b.is_empty()
                && b.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') =>
        {
            Ok(PathBuf::from(format!("runs/reproduce-{task}-{b}")))
        }
        Some(b) => bail!(
            "--backbone {b:?}: expected a backbone name such as restormer or restormer-cpu \
             (lowercase letters, digits and '-')"
        ),
    }
}

/// A number field of a one-line JSON object printed by `daa eval --json`.
fn num(line: &str, key: &str) -> f64 {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v[key].as_f64())
        .unwrap_or(f64::NAN)
}

/// One trained method at one seed: its run folder and `daa eval --json` lines.
struct Row {
    method: &'static str,
    seed: u64,
    dir: PathBuf,
    target: String,
    source: String,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
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
        let steps = self.steps.unwrap_or(if gpu { 2000 } else { 300 });
        let tasks: Vec<&str> = if self.task == "all" {
            vec!["denoise", "deblur", "derain"]
        } else {
            vec![self.task.as_str()]
        };
        run_root("denoise", self.backbone.as_deref())?;
        if let Some(m) = &self.methods {
            for name in m {
                if !METHODS.iter().any(|(n, _)| n == name) {
                    bail!("unknown method {name:?}");
                }
            }
        }
        for task in tasks {
            self.task_run(&daa, task, steps, gpu)?;
        }
        Ok(())
    }

    fn wanted(&self, method: &str, first_seed: bool) -> bool {
        match &self.methods {
            Some(m) => m.iter().any(|n| n == method),
            None => first_seed || method == "vanilla" || method == "da",
        }
    }

    fn task_run(&self, daa: &Path, task: &str, steps: usize, gpu: bool) -> Result<()> {
        let root = run_root(task, self.backbone.as_deref())?;
        std::fs::create_dir_all(&root)?;
        let device = if gpu { "cuda:0" } else { "cpu" };
        let steps_s = steps.to_string();
        let mut rows: Vec<Row> = Vec::new();
        for (k, &seed) in self.seeds.iter().enumerate() {
            let seed_s = seed.to_string();
            for (name, flags) in METHODS {
                if !self.wanted(name, k == 0) {
                    continue;
                }
                let dir = root.join(format!("seed-{seed}")).join(name);
                let ckpt = dir.join(restorer_checkpoint(steps));
                if ckpt.exists() {
                    eprintln!("{name} (seed {seed}): reusing {dir:?}");
                } else {
                    let mut c = Command::new(daa);
                    c.args([
                        "train", "--preset", task, "--steps", &steps_s, "--seed", &seed_s,
                    ])
                    .args(["--device", device, "--checkpoint-every", "0", "--run-dir"])
                    .arg(&dir)
                    .args(flags);
                    if let Some(b) = &self.backbone {
                        c.args(["--backbone", b]);
                    }
                    run_echoed(c)?;
                }
                let mut scores = Vec::new();
                for domain in ["target", "source"] {
                    let mut c = Command::new(daa);
                    c.args(["eval", "--preset", task, "--domain", domain, "--json"])
                        .args(["--device", device, "--checkpoint"])
                        .arg(&ckpt);
                    if domain == "target" {
                        c.arg("--save-dir").arg(dir.join("eval-target"));
                    }
                    let out = c.output().with_context(|| format!("evaluating {ckpt:?}"))?;
                    if !out.status.success() {
                        bail!("daa eval failed: {}", String::from_utf8_lossy(&out.stderr));
                    }
                    scores.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
                }
                let source = scores.pop().unwrap_or_default();
                let target = scores.pop().unwrap_or_default();
                rows.push(Row {
                    method: name,
                    seed,
                    dir,
                    target,
                    source,
                });
            }
        }
        let md = self.report(&root, task, steps, &rows)?;
        let mut figures = String::new();
        figures += &loss_curves(&root, &rows)?;
        figures += &held_out_grid(&root, &rows)?;
        figures += &self.real_grid(daa, &root, task, device, &rows)?;
        let md = format!("{md}{figures}");
        let json: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"method\": \"{}\", \"seed\": {}, \"target\": {}, \"source\": {}}}",
                    r.method, r.seed, r.target, r.source
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

    /// The markdown table: means over seeds, per-seed target PSNR, gap closed, seed spread.
    fn report(&self, root: &Path, task: &str, steps: usize, rows: &[Row]) -> Result<String> {
        let seeds: Vec<String> = self.seeds.iter().map(|s| s.to_string()).collect();
        let (backbone_flag, networks) = match &self.backbone {
            Some(b) => (format!(" --backbone {b}"), format!("restorer `{b}`")),
            None => (String::new(), format!("the `{task}` preset's networks")),
        };
        let mut md = format!(
            "# {task}: synthetic-to-target comparison\n\n`cargo xtask reproduce --task {task} --budget {} \
             --seeds {}{backbone_flag}` ({steps} steps, {networks}; written to {root:?}). \
             Held-out photos degraded like the target (\"real\") and the source (synthetic) domain; \
             PSNR (dB) / SSIM, means over the seeds each method ran with.\n\n\
             | method | seeds | target PSNR | target PSNR per seed | target SSIM | source PSNR | source SSIM |\n\
             |---|---|---|---|---|---|---|\n",
            self.budget,
            seeds.join(",")
        );
        let Some(first) = rows.first() else {
            bail!("no method ran");
        };
        md += &format!(
            "| (degraded input) | | {:.2} | | {:.4} | {:.2} | {:.4} |\n",
            num(&first.target, "input_psnr"),
            num(&first.target, "input_ssim"),
            num(&first.source, "input_psnr"),
            num(&first.source, "input_ssim")
        );
        let mut target_psnr = std::collections::BTreeMap::new();
        for (name, _) in METHODS {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.method == name).collect();
            if mine.is_empty() {
                continue;
            }
            let col =
                |f: &dyn Fn(&Row) -> f64| mean(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
            let per_seed: Vec<f64> = mine.iter().map(|r| num(&r.target, "psnr")).collect();
            md += &format!(
                "| {name} | {} | {:.2} | {} | {:.4} | {:.2} | {:.4} |\n",
                mine.len(),
                mean(&per_seed),
                per_seed
                    .iter()
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                col(&|r| num(&r.target, "ssim")),
                col(&|r| num(&r.source, "psnr")),
                col(&|r| num(&r.source, "ssim")),
            );
            target_psnr.insert(name, per_seed);
        }
        // Gap closed, on the first seed (the only one every method runs with by default).
        let seed0 = self.seeds.first().copied().unwrap_or(0);
        let at = |n: &str, seed: u64| {
            rows.iter()
                .find(|r| r.method == n && r.seed == seed)
                .map(|r| num(&r.target, "psnr"))
                .unwrap_or(f64::NAN)
        };
        let (van, da, ora) = (at("vanilla", seed0), at("da", seed0), at("oracle", seed0));
        md += "\n";
        // One line per adapting method that ran (a method left out by --methods has no line).
        for (name, label, value) in [
            ("da", "DA", da),
            ("dann", "DANN (feature space)", at("dann", seed0)),
        ] {
            if value.is_nan() {
                continue;
            }
            md += &format!(
                "Fraction of the vanilla-to-oracle gap (target PSNR, seed {seed0}) closed by \
                 {label}: {:.2} (({name} - vanilla) / (oracle - vanilla) = ({value:.2} - \
                 {van:.2}) / ({ora:.2} - {van:.2})).\n",
                (value - van) / (ora - van)
            );
        }
        let spread = |n: &str| {
            target_psnr.get(n).filter(|v| v.len() > 1).map(|v| {
                v.iter().cloned().fold(f64::MIN, f64::max)
                    - v.iter().cloned().fold(f64::MAX, f64::min)
            })
        };
        if let (Some(sv), Some(sd)) = (spread("vanilla"), spread("da")) {
            let diffs: Vec<f64> = self
                .seeds
                .iter()
                .map(|&s| at("da", s) - at("vanilla", s))
                .collect();
            let gain = mean(&diffs);
            let s = sv.max(sd);
            md += &format!(
                "\nDA - vanilla on the target domain, per seed: {} dB (mean {gain:+.2} dB). Spread \
                 between seeds (max - min of a method's target PSNR): vanilla {sv:.2} dB, DA \
                 {sd:.2} dB. DA {} vanilla by more than the seed spread.\n",
                diffs.iter().map(|d| format!("{d:+.2}")).collect::<Vec<_>>().join(", "),
                if gain > s { "beats" } else { "does not beat" }
            );
        }
        Ok(md)
    }

    /// `real.png`: real degraded photos restored by vanilla and DA (first seed).
    fn real_grid(
        &self,
        daa: &Path,
        root: &Path,
        task: &str,
        device: &str,
        rows: &[Row],
    ) -> Result<String> {
        let dir = match (&self.real_dir, task) {
            (Some(d), _) => d.clone(),
            (None, "deblur") => PathBuf::from("datasets/real"),
            (None, _) => {
                return Ok(format!(
                    "\nNo real degraded {task} photos were given (`--real-dir`), so there is no \
                     `real.png`.\n"
                ))
            }
        };
        let seed = self.seeds.first().copied().unwrap_or(0);
        let ckpt = |m: &str| {
            rows.iter()
                .find(|r| r.method == m && r.seed == seed)
                .and_then(|r| newest_restorer(&r.dir))
        };
        let (Some(van), Some(da)) = (ckpt("vanilla"), ckpt("da")) else {
            return Ok(String::new());
        };
        let crops = root.join("real").join("input");
        if crops.exists() {
            std::fs::remove_dir_all(&crops)?;
        }
        std::fs::create_dir_all(&crops)?;
        let mut names = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {dir:?}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let Ok(img) = image::open(&p) else { continue };
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            plot::centre_crop(&img.to_rgb8(), 256).save(crops.join(format!("{name}.png")))?;
            names.push(name);
        }
        if names.is_empty() {
            bail!("no readable images in {dir:?}");
        }
        for (m, c) in [("vanilla", &van), ("da", &da)] {
            let mut cmd = Command::new(daa);
            cmd.args(["restore", "--device", device, "--checkpoint"])
                .arg(c)
                .arg("--input")
                .arg(&crops)
                .arg("--output")
                .arg(root.join("real").join(m));
            run_echoed(cmd)?;
        }
        let mut grid_rows = Vec::new();
        for n in &names {
            let f = format!("{n}.png");
            grid_rows.push(vec![
                plot::centre_tile(&crops.join(&f), 256)?,
                plot::centre_tile(&root.join("real/vanilla").join(&f), 256)?,
                plot::centre_tile(&root.join("real/da").join(&f), 256)?,
            ]);
        }
        plot::grid(
            &root.join("real.png"),
            &["real input", "vanilla", "DA"],
            &grid_rows,
        )?;
        Ok(format!(
            "\n`real.png`: real degraded photos from {dir:?} (centre 256 x 256 crops, no ground \
             truth), restored by vanilla and DA (seed {seed}).\n"
        ))
    }
}

/// The file name of a run's restorer checkpoint at `step`. xtask runs `daa` as a subprocess and
/// links no daa crate, so this mirrors `daa_train::CheckpointKind::Restorer` (run_dir.rs).
fn restorer_checkpoint(step: usize) -> String {
    format!("restorer-{step}.safetensors")
}

/// The step of a restorer checkpoint's file name (`restorer-{step}.safetensors`), `None` for any
/// other file (`restorer-best`, `restorer-ema-{step}`, temporary files).
fn restorer_checkpoint_step(name: &str) -> Option<usize> {
    let step = name
        .strip_prefix("restorer-")?
        .strip_suffix(".safetensors")?;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    step.parse().ok()
}

/// The highest-step `restorer-N.safetensors` of a run folder.
fn newest_restorer(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            Some((
                restorer_checkpoint_step(p.file_name()?.to_str()?)?,
                p.clone(),
            ))
        })
        .max()
        .map(|(_, p)| p)
}

/// A series of `key` from a run's metrics.jsonl, smoothed by a 5-point moving average.
fn series(dir: &Path, key: &str) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    let raw: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
        .collect();
    (0..raw.len())
        .map(|i| {
            let lo = i.saturating_sub(4);
            let w = &raw[lo..=i];
            (
                raw[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect()
}

/// `loss_rec.png` and `loss_diffusion.png` from the first seed's runs.
fn loss_curves(root: &Path, rows: &[Row]) -> Result<String> {
    let seed = rows.first().map(|r| r.seed).unwrap_or(0);
    let first: Vec<&Row> = rows.iter().filter(|r| r.seed == seed).collect();
    let rec: Vec<(String, Vec<(f64, f64)>)> = first
        .iter()
        .map(|r| (r.method.to_string(), series(&r.dir, "loss_rec")))
        .collect();
    plot::line_chart(
        &root.join("loss_rec.png"),
        "restoration L1 loss",
        "step",
        "L1 (5-point mean)",
        &rec,
    )?;
    let diff: Vec<(String, Vec<(f64, f64)>)> = first
        .iter()
        .filter(|r| trains_diffusion(r.method))
        .flat_map(|r| {
            [
                (format!("{} pos", r.method), series(&r.dir, "loss_diff_pos")),
                (format!("{} neg", r.method), series(&r.dir, "loss_diff_neg")),
            ]
        })
        .collect();
    plot::line_chart(
        &root.join("loss_diffusion.png"),
        "diffusion noise loss",
        "step",
        "MSE (5-point mean)",
        &diff,
    )?;
    Ok(format!(
        "\nTraining curves (seed {seed}): `loss_rec.png` (restoration L1 on the training pairs: \
         source pairs, target pairs for the oracle) and `loss_diffusion.png` (the diffusion \
         network's noise-prediction loss with the clean target in the positive and the swapped \
         residual in the negative slot; DA and its ablations only: DANN trains no diffusion \
         network, its domain loss is `loss_domain` in its metrics.jsonl).\n"
    ))
}

/// `grid.png`: centre crops of the held-out target photos: input, vanilla, DA, oracle, truth.
fn held_out_grid(root: &Path, rows: &[Row]) -> Result<String> {
    let seed = rows.first().map(|r| r.seed).unwrap_or(0);
    let dir = |m: &str| {
        rows.iter()
            .find(|r| r.method == m && r.seed == seed)
            .map(|r| r.dir.join("eval-target"))
    };
    let (Some(van), Some(da), Some(ora)) = (dir("vanilla"), dir("da"), dir("oracle")) else {
        return Ok(String::new());
    };
    let mut names: Vec<String> = std::fs::read_dir(van.join("input"))
        .with_context(|| format!("listing {van:?}"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut grid_rows = Vec::new();
    for f in &names {
        grid_rows.push(vec![
            plot::centre_tile(&van.join("input").join(f), 128)?,
            plot::centre_tile(&van.join(f), 128)?,
            plot::centre_tile(&da.join(f), 128)?,
            plot::centre_tile(&ora.join(f), 128)?,
            plot::centre_tile(&van.join("gt").join(f), 128)?,
        ]);
    }
    plot::grid(
        &root.join("grid.png"),
        &["input", "vanilla", "DA", "oracle", "truth"],
        &grid_rows,
    )?;
    Ok(format!(
        "\n`grid.png`: centre 128 x 128 crops of the held-out photos degraded like the target \
         domain (seed {seed}).\n"
    ))
}

#[cfg(test)]
mod checkpoint_name_tests {
    use super::*;

    #[test]
    fn restorer_checkpoint_names_round_trip_and_others_are_not_checkpoints() {
        for step in [0, 6, 13_430] {
            assert_eq!(
                restorer_checkpoint_step(&restorer_checkpoint(step)),
                Some(step)
            );
        }
        for name in [
            "restorer-best.safetensors",
            "restorer-ema-4.safetensors",
            "restorer-+4.safetensors",
            "diffusion-4.safetensors",
        ] {
            assert_eq!(restorer_checkpoint_step(name), None, "{name}");
        }
    }
}

#[cfg(test)]
mod method_tests {
    use super::*;

    #[test]
    fn dann_is_a_row_but_not_a_diffusion_run() {
        assert!(METHODS
            .iter()
            .any(|(n, f)| *n == "dann" && f.contains(&"dann")));
        for (name, _) in METHODS {
            let want = matches!(name, "da" | "da-no-shuffle" | "da-no-contrastive");
            assert_eq!(trains_diffusion(name), want, "{name}");
        }
    }

    #[test]
    fn each_backbone_has_its_own_run_folder_and_odd_names_are_refused() -> Result<()> {
        assert_eq!(
            run_root("denoise", None)?,
            PathBuf::from("runs/reproduce-denoise")
        );
        assert_eq!(
            run_root("derain", Some("restormer-cpu"))?,
            PathBuf::from("runs/reproduce-derain-restormer-cpu")
        );
        for bad in ["", "../x", "Unet", "a b", "unet/cpu"] {
            let err = run_root("denoise", Some(bad)).err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("--backbone")), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn the_first_seed_runs_every_method_by_default() {
        let r = Reproduce {
            task: "denoise".into(),
            budget: "cpu".into(),
            steps: None,
            seeds: vec![0, 1],
            methods: None,
            backbone: None,
            real_dir: None,
        };
        for (name, _) in METHODS {
            assert!(r.wanted(name, true), "{name}");
            assert_eq!(r.wanted(name, false), name == "vanilla" || name == "da");
        }
    }
}
