//! Each kernel against its reference (candle's op), forward + backward, on the CPU.
//! `cargo bench -p daa-kernels` (groups named `{device}_{op}_{dtype}_{shape}`).

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};

fn time(iters: u64, f: impl Fn() -> candle_core::Result<()>) -> Duration {
    let t0 = Instant::now();
    for _ in 0..iters {
        f().unwrap_or_else(|e| panic!("{e}"));
    }
    let _ = Device::Cpu.synchronize();
    t0.elapsed()
}

/// The previous CPU conv: the full im2col matrix as one tensor, one candle matmul, and a
/// transpose back to NCHW (backward through candle's matmul and col2im).
fn conv_full_im2col(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, wd) = x.dims4()?;
    let (o, _, k, _) = w.dims4()?;
    let g = daa_kernels::Conv2dGeometry {
        b,
        c,
        h,
        w: wd,
        k,
        stride: 1,
        padding: k / 2,
    };
    let (oh, ow) = (g.oh(), g.ow());
    let cols = daa_kernels::im2col(x, g)?.reshape((b * oh * ow, g.ckk()))?;
    let out = cols.matmul(&w.reshape((o, g.ckk()))?.t()?)?;
    out.reshape((b, oh * ow, o))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, o, oh, ow))
}

fn conv(c: &mut Criterion) {
    let dev = Device::Cpu;
    // The cpu preset's first level, a wider level, and a paper-network level at batch 2.
    for (b, ch, hw) in [(8, 16, 48), (8, 32, 64), (2, 256, 16)] {
        let x = Var::from_tensor(
            &Tensor::randn(0f32, 1., (b, ch, hw, hw), &dev).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let w = Var::from_tensor(
            &Tensor::randn(0f32, 0.1, (ch, ch, 3, 3), &dev).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut g = c.benchmark_group(format!("cpu_conv2d3x3_f32_{b}x{ch}x{hw}x{hw}"));
        g.sample_size(10);
        g.bench_function("daa_fwd_bwd", |bn| {
            bn.iter_custom(|n| {
                time(n, || {
                    daa_kernels::conv2d(x.as_tensor(), w.as_tensor(), 1, 1)?
                        .sum_all()?
                        .backward()
                        .map(|_| ())
                })
            })
        });
        g.bench_function("full_im2col_fwd_bwd", |bn| {
            bn.iter_custom(|n| {
                time(n, || {
                    conv_full_im2col(x.as_tensor(), w.as_tensor())?
                        .sum_all()?
                        .backward()
                        .map(|_| ())
                })
            })
        });
        g.bench_function("candle_fwd_bwd", |bn| {
            bn.iter_custom(|n| {
                time(n, || {
                    x.as_tensor()
                        .conv2d(w.as_tensor(), 1, 1, 1, 1)?
                        .sum_all()?
                        .backward()
                        .map(|_| ())
                })
            })
        });
        g.finish();
    }
}

fn group_norm(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x = Var::from_tensor(
        &Tensor::randn(0f32, 1., (8, 32, 48, 48), &dev).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ga = Var::from_tensor(
        &Tensor::ones(32, candle_core::DType::F32, &dev).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let be = Var::from_tensor(
        &Tensor::zeros(32, candle_core::DType::F32, &dev).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("cpu_group_norm_f32_8x32x48x48");
    g.sample_size(10);
    g.bench_function("daa_fwd_bwd", |bn| {
        bn.iter_custom(|n| {
            time(n, || {
                daa_kernels::group_norm(x.as_tensor(), ga.as_tensor(), be.as_tensor(), 8, 1e-5)?
                    .sum_all()?
                    .backward()
                    .map(|_| ())
            })
        })
    });
    g.bench_function("reference_fwd_bwd", |bn| {
        bn.iter_custom(|n| {
            time(n, || {
                daa_kernels::group_norm_reference(
                    x.as_tensor(),
                    ga.as_tensor(),
                    be.as_tensor(),
                    8,
                    1e-5,
                )?
                .sum_all()?
                .backward()
                .map(|_| ())
            })
        })
    });
    g.finish();
}

fn swap_condition(c: &mut Criterion) {
    let dev = Device::Cpu;
    let var = |shape: (usize, usize, usize, usize)| {
        Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (y, a, b) = (
        var((8, 3, 48, 48)),
        var((8, 3, 48, 48)),
        var((8, 3, 48, 48)),
    );
    let swap = [true, false, true, true, false, false, true, false];
    let mut g = c.benchmark_group("cpu_swap_condition_f32_8x3x48x48");
    g.sample_size(20);
    g.bench_function("daa_fwd_bwd", |bn| {
        bn.iter_custom(|n| {
            time(n, || {
                daa_kernels::swap_condition(&y, &a, &b, &swap)?
                    .sum_all()?
                    .backward()
                    .map(|_| ())
            })
        })
    });
    g.bench_function("reference_fwd_bwd", |bn| {
        bn.iter_custom(|n| {
            time(n, || {
                daa_kernels::swap_condition_reference(&y, &a, &b, &swap)?
                    .sum_all()?
                    .backward()
                    .map(|_| ())
            })
        })
    });
    g.finish();
}

fn leaky_relu(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x = Var::from_tensor(
        &Tensor::randn(0f32, 1., (8, 16, 48, 48), &dev).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("cpu_leaky_relu_f32_8x16x48x48");
    g.sample_size(20);
    g.bench_function("daa_fwd_bwd", |bn| {
        bn.iter_custom(|n| {
            time(n, || {
                daa_kernels::leaky_relu(x.as_tensor(), 0.2)?
                    .sum_all()?
                    .backward()
                    .map(|_| ())
            })
        })
    });
    g.bench_function("reference_fwd_bwd", |bn| {
        bn.iter_custom(|n| {
            time(n, || {
                daa_kernels::leaky_relu_reference(x.as_tensor(), 0.2)?
                    .sum_all()?
                    .backward()
                    .map(|_| ())
            })
        })
    });
    g.finish();
}

criterion_group!(benches, conv, group_norm, swap_condition, leaky_relu);
criterion_main!(benches);
