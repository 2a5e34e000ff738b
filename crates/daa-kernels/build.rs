//! With the `cuda` feature: compiles `kernels/*.cu` to PTX with nvcc (from `CUDA_HOME/bin` or
//! `PATH`) into `OUT_DIR`, where `src/ptx.rs` includes it. Without it: nothing, so the CPU build
//! never needs the CUDA toolkit.
use std::path::PathBuf;
use std::process::Command;

const KERNELS: [&str; 2] = ["group_norm", "swap_condition"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // PTX for the oldest architecture asked for; the driver JIT-compiles it for newer GPUs.
    // bf16 arithmetic needs compute capability 8.0.
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .and_then(|c| c.trim().parse::<u32>().ok())
        .unwrap_or(80)
        .max(80);
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    for name in KERNELS {
        let src = format!("kernels/{name}.cu");
        println!("cargo::rerun-if-changed={src}");
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("daa-kernels: cannot run {nvcc:?} (set CUDA_HOME): {e}"));
        assert!(status.success(), "daa-kernels: nvcc failed on {src}");
    }
}
