//! conv2d on CUDA through cuDNN (the `cudnn` feature): forward, backward-data and
//! backward-filter, each a custom op, so candle's autograd calls cuDNN for both gradients
//! instead of its own transposed-convolution kernels (CUDA.md: on an H100 candle's weight
//! gradient took 48.7 ms where the cuDNN forward took 0.71 ms).
//!
//! Per shape (device, pass, dtype, geometry, math mode) the descriptors, the algorithm and its
//! workspace size are built once and cached for the thread (cuDNN handles are not thread
//! safe; candle keeps its own per thread in the same way). The algorithm is timed once with
//! `cudnnFind*AlgorithmEx` or taken from cuDNN's heuristics (see [`crate::conv_benchmark`]);
//! one workspace per device is kept and grown to the largest request. f32 convolutions use
//! TF32 tensor cores unless [`crate::conv_tf32`] is off; bf16 and f16 convolutions compute in
//! f32 (`CUDNN_DATA_FLOAT`) on tensor cores; f64 in f64.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::cudnn::{result as cr, sys, CudnnError};
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr,
};
use candle_core::cuda::{CudaStorageSlice, DeviceId};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::rc::Rc;

/// The most workspace one algorithm may ask for (bytes): algorithms that need more are skipped.
const WORKSPACE_LIMIT: usize = 1 << 30;
/// Algorithms considered per query (more than cuDNN has for any pass).
const N_ALGOS: usize = 16;

/// Shape of one convolution: input `(b, c, h, w)`, weight `(o, c, k, k)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geom {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Geom {
    fn oh(&self) -> usize {
        (self.h + 2 * self.padding - self.k) / self.stride + 1
    }
    fn ow(&self) -> usize {
        (self.w + 2 * self.padding - self.k) / self.stride + 1
    }
    fn x_dims(&self) -> [usize; 4] {
        [self.b, self.c, self.h, self.w]
    }
    fn w_dims(&self) -> [usize; 4] {
        [self.o, self.c, self.k, self.k]
    }
    fn y_dims(&self) -> [usize; 4] {
        [self.b, self.o, self.oh(), self.ow()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    BackwardData,
    BackwardFilter,
}

#[derive(Debug, Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    BackwardData(sys::cudnnConvolutionBwdDataAlgo_t),
    BackwardFilter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    device: DeviceId,
    pass: Pass,
    dtype: DType,
    geom: Geom,
    tf32: bool,
    benchmark: bool,
}

struct Handle(sys::cudnnHandle_t);
impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreate, destroyed once.
        let _ = unsafe { cr::destroy_handle(self.0) };
    }
}
struct TensorDesc(sys::cudnnTensorDescriptor_t);
impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateTensorDescriptor, destroyed once.
        let _ = unsafe { cr::destroy_tensor_descriptor(self.0) };
    }
}
struct FilterDesc(sys::cudnnFilterDescriptor_t);
impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateFilterDescriptor, destroyed once.
        let _ = unsafe { cr::destroy_filter_descriptor(self.0) };
    }
}
struct ConvDesc(sys::cudnnConvolutionDescriptor_t);
impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateConvolutionDescriptor, destroyed once.
        let _ = unsafe { cr::destroy_convolution_descriptor(self.0) };
    }
}

/// Everything one cached convolution needs besides the data pointers.
struct Plan {
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
    conv: ConvDesc,
    algo: Algo,
    workspace: usize,
}

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Rc<Handle>>> = RefCell::new(HashMap::new());
    static PLANS: RefCell<HashMap<Key, Rc<Plan>>> = RefCell::new(HashMap::new());
    static WORKSPACES: RefCell<HashMap<DeviceId, CudaSlice<u8>>> = RefCell::new(HashMap::new());
}

fn err(op: &str, e: CudnnError) -> candle_core::Error {
    candle_core::Error::Msg(format!("conv2d (cuDNN {op}): {e:?}"))
}

fn int(v: usize) -> Result<c_int> {
    c_int::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("conv2d: dimension {v} too large for cuDNN")))
}

fn dims4(d: [usize; 4]) -> Result<[c_int; 4]> {
    Ok([int(d[0])?, int(d[1])?, int(d[2])?, int(d[3])?])
}

/// cuDNN storage type and compute type of a candle dtype.
fn types(dtype: DType) -> Result<(sys::cudnnDataType_t, sys::cudnnDataType_t)> {
    use sys::cudnnDataType_t as T;
    Ok(match dtype {
        DType::F32 => (T::CUDNN_DATA_FLOAT, T::CUDNN_DATA_FLOAT),
        DType::F64 => (T::CUDNN_DATA_DOUBLE, T::CUDNN_DATA_DOUBLE),
        DType::BF16 => (T::CUDNN_DATA_BFLOAT16, T::CUDNN_DATA_FLOAT),
        DType::F16 => (T::CUDNN_DATA_HALF, T::CUDNN_DATA_FLOAT),
        other => candle_core::bail!("conv2d: unsupported dtype {other:?} for cuDNN"),
    })
}

fn handle(dev: &CudaDevice) -> Result<Rc<Handle>> {
    HANDLES.with(|h| {
        if let Some(h) = h.borrow().get(&dev.id()) {
            return Ok(h.clone());
        }
        let raw = cr::create_handle().map_err(|e| err("create", e))?;
        let handle = Rc::new(Handle(raw));
        let stream = dev.cuda_stream();
        // SAFETY: a live handle and the device's live stream (held by the device).
        unsafe { cr::set_stream(raw, stream.cu_stream() as sys::cudaStream_t) }
            .map_err(|e| err("set stream", e))?;
        h.borrow_mut().insert(dev.id(), handle.clone());
        Ok(handle)
    })
}

/// Descriptors for one geometry and dtype, math mode set.
fn descriptors(
    g: &Geom,
    dtype: DType,
    tf32: bool,
) -> Result<(TensorDesc, FilterDesc, TensorDesc, ConvDesc)> {
    use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW as NCHW;
    let (data, compute) = types(dtype)?;
    let e = |op| move |e| err(op, e);
    let x = TensorDesc(cr::create_tensor_descriptor().map_err(e("descriptor"))?);
    let y = TensorDesc(cr::create_tensor_descriptor().map_err(e("descriptor"))?);
    let w = FilterDesc(cr::create_filter_descriptor().map_err(e("descriptor"))?);
    let conv = ConvDesc(cr::create_convolution_descriptor().map_err(e("descriptor"))?);
    let (p, s) = (int(g.padding)?, int(g.stride)?);
    let math = match dtype {
        DType::F32 if !tf32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        DType::BF16 | DType::F16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        _ => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
    };
    // SAFETY: freshly created descriptors, valid enum values.
    unsafe {
        cr::set_tensor4d_descriptor(x.0, NCHW, data, dims4(g.x_dims())?).map_err(e("x"))?;
        cr::set_tensor4d_descriptor(y.0, NCHW, data, dims4(g.y_dims())?).map_err(e("y"))?;
        cr::set_filter4d_descriptor(w.0, data, NCHW, dims4(g.w_dims())?).map_err(e("w"))?;
        cr::set_convolution2d_descriptor(
            conv.0,
            p,
            p,
            s,
            s,
            1,
            1,
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            compute,
        )
        .map_err(e("conv"))?;
        cr::set_convolution_math_type(conv.0, math).map_err(e("math type"))?;
    }
    Ok((x, w, y, conv))
}

/// Device pointers of one call: the two inputs and the output, per pass
/// (forward: x, w -> y; backward-data: dy, w -> dx; backward-filter: x, dy -> dw).
struct Ptrs {
    a: *const c_void,
    b: *const c_void,
    out: *mut c_void,
}

/// The first usable result of a cuDNN algorithm query.
macro_rules! first_ok {
    ($perf:expr, $n:expr, $limit:expr) => {
        $perf[..$n.max(0) as usize]
            .iter()
            .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && p.memory <= $limit)
            .map(|p| (p.algo, p.mathType))
    };
}

/// Chooses the algorithm of `pass` (timing it on the call's own buffers when `benchmark`), sets
/// its math mode on the descriptor, and returns it with its workspace size.
#[allow(clippy::too_many_arguments)]
fn choose(
    h: sys::cudnnHandle_t,
    pass: Pass,
    (x, w, y, conv): (&TensorDesc, &FilterDesc, &TensorDesc, &ConvDesc),
    benchmark: bool,
    strict: bool,
    ptrs: &Ptrs,
    scratch: Option<(*mut c_void, usize)>,
) -> Result<(Algo, usize)> {
    let mut n: c_int = 0;
    let (ws_ptr, ws_len) = scratch.unwrap_or((std::ptr::null_mut(), 0));
    let e = |op| move |e| err(op, e);
    // SAFETY (all blocks): live handle and descriptors; perf arrays hold N_ALGOS entries; the
    // pointers are the call's buffers, whose sizes match the descriptors.
    let (algo, math) = match pass {
        Pass::Forward => {
            let mut perf =
                [unsafe { std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>() }; N_ALGOS];
            unsafe {
                if benchmark {
                    sys::cudnnFindConvolutionForwardAlgorithmEx(
                        h,
                        x.0,
                        ptrs.a,
                        w.0,
                        ptrs.b,
                        conv.0,
                        y.0,
                        ptrs.out,
                        N_ALGOS as c_int,
                        &mut n,
                        perf.as_mut_ptr(),
                        ws_ptr,
                        ws_len,
                    )
                    .result()
                    .map_err(e("find forward"))?;
                } else {
                    cr::get_convolution_forward_algorithm(
                        h,
                        x.0,
                        w.0,
                        conv.0,
                        y.0,
                        N_ALGOS as c_int,
                        &mut n,
                        perf.as_mut_ptr(),
                    )
                    .map_err(e("forward heuristics"))?;
                }
            }
            let (a, m) = first_ok!(perf, n, WORKSPACE_LIMIT).ok_or_else(|| {
                candle_core::Error::Msg("conv2d: no cuDNN forward algorithm".into())
            })?;
            (Algo::Forward(a), m)
        }
        Pass::BackwardData => {
            let mut perf =
                [unsafe { std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>() }; N_ALGOS];
            unsafe {
                if benchmark {
                    sys::cudnnFindConvolutionBackwardDataAlgorithmEx(
                        h,
                        w.0,
                        ptrs.b,
                        y.0,
                        ptrs.a,
                        conv.0,
                        x.0,
                        ptrs.out,
                        N_ALGOS as c_int,
                        &mut n,
                        perf.as_mut_ptr(),
                        ws_ptr,
                        ws_len,
                    )
                    .result()
                    .map_err(e("find backward data"))?;
                } else {
                    cr::get_convolution_backward_data_algorithm(
                        h,
                        w.0,
                        y.0,
                        conv.0,
                        x.0,
                        N_ALGOS as c_int,
                        &mut n,
                        perf.as_mut_ptr(),
                    )
                    .map_err(e("backward data heuristics"))?;
                }
            }
            let (a, m) = first_ok!(perf, n, WORKSPACE_LIMIT).ok_or_else(|| {
                candle_core::Error::Msg("conv2d: no cuDNN backward-data algorithm".into())
            })?;
            (Algo::BackwardData(a), m)
        }
        Pass::BackwardFilter => {
            let mut perf =
                [unsafe { std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>() };
                    N_ALGOS];
            unsafe {
                if benchmark {
                    sys::cudnnFindConvolutionBackwardFilterAlgorithmEx(
                        h,
                        x.0,
                        ptrs.a,
                        y.0,
                        ptrs.b,
                        conv.0,
                        w.0,
                        ptrs.out,
                        N_ALGOS as c_int,
                        &mut n,
                        perf.as_mut_ptr(),
                        ws_ptr,
                        ws_len,
                    )
                    .result()
                    .map_err(e("find backward filter"))?;
                } else {
                    cr::get_convolution_backward_filter_algorithm(
                        h,
                        x.0,
                        y.0,
                        conv.0,
                        w.0,
                        N_ALGOS as c_int,
                        &mut n,
                        perf.as_mut_ptr(),
                    )
                    .map_err(e("backward filter heuristics"))?;
                }
            }
            let (a, m) = first_ok!(perf, n, WORKSPACE_LIMIT).ok_or_else(|| {
                candle_core::Error::Msg("conv2d: no cuDNN backward-filter algorithm".into())
            })?;
            (Algo::BackwardFilter(a), m)
        }
    };
    // The math mode the algorithm was chosen with (tensor cores or not), except that strict f32
    // stays on FMA whatever cuDNN reports.
    if !strict {
        // SAFETY: live descriptor.
        unsafe { cr::set_convolution_math_type(conv.0, math) }.map_err(e("math type"))?;
    }
    // SAFETY: live handle and descriptors, an algorithm cuDNN returned for them.
    let ws = unsafe {
        match algo {
            Algo::Forward(a) => {
                cr::get_convolution_forward_workspace_size(h, x.0, w.0, conv.0, y.0, a)
            }
            Algo::BackwardData(a) => {
                cr::get_convolution_backward_data_workspace_size(h, w.0, y.0, conv.0, x.0, a)
            }
            Algo::BackwardFilter(a) => {
                cr::get_convolution_backward_filter_workspace_size(h, x.0, y.0, conv.0, w.0, a)
            }
        }
    }
    .map_err(e("workspace size"))?;
    Ok((algo, ws))
}

/// The device's workspace, grown to at least `len` bytes; `f` gets its pointer and length.
fn with_workspace<R>(
    dev: &CudaDevice,
    stream: &CudaStream,
    len: usize,
    f: impl FnOnce(*mut c_void, usize) -> Result<R>,
) -> Result<R> {
    if len == 0 {
        return f(std::ptr::null_mut(), 0);
    }
    WORKSPACES.with(|ws| {
        let mut ws = ws.borrow_mut();
        let grow = ws.get(&dev.id()).is_none_or(|s| s.len() < len);
        if grow {
            // Freed in stream order, so a kernel still using the old buffer is safe.
            ws.remove(&dev.id());
            // SAFETY: scratch memory, never read before cuDNN writes it.
            ws.insert(dev.id(), unsafe { dev.alloc::<u8>(len)? });
        }
        let Some(buf) = ws.get_mut(&dev.id()) else {
            candle_core::bail!("conv2d: workspace missing")
        };
        let n = buf.len();
        let (ptr, _sync) = buf.device_ptr_mut(stream);
        f(ptr as *mut c_void, n)
    })
}

/// Runs one pass on `a`, `b` (see [`Ptrs`]) into a new buffer of `out_len` elements.
fn run<T: DeviceRepr>(
    dev: &CudaDevice,
    pass: Pass,
    dtype: DType,
    g: Geom,
    a: &CudaView<T>,
    b: &CudaView<T>,
    out_len: usize,
) -> Result<CudaSlice<T>> {
    let (tf32, benchmark) = (crate::conv_tf32(), crate::conv_benchmark());
    let strict = dtype == DType::F32 && !tf32;
    let key = Key {
        device: dev.id(),
        pass,
        dtype,
        geom: g,
        tf32,
        benchmark,
    };
    let h = handle(dev)?;
    let stream = dev.cuda_stream();
    // SAFETY: cuDNN writes every element (beta = 0).
    let mut out = unsafe { dev.alloc::<T>(out_len)? };
    let (pa, _sa) = a.device_ptr(&stream);
    let (pb, _sb) = b.device_ptr(&stream);
    let (po, _so) = out.device_ptr_mut(&stream);
    let ptrs = Ptrs {
        a: pa as *const c_void,
        b: pb as *const c_void,
        out: po as *mut c_void,
    };
    let cached = PLANS.with(|p| p.borrow().get(&key).cloned());
    let plan = match cached {
        Some(plan) => plan,
        None => {
            let (x, w, y, conv) = descriptors(&g, dtype, tf32)?;
            let descs = (&x, &w, &y, &conv);
            let (algo, workspace) = if benchmark {
                with_workspace(dev, &stream, WORKSPACE_LIMIT / 4, |p, n| {
                    choose(h.0, pass, descs, true, strict, &ptrs, Some((p, n)))
                })?
            } else {
                choose(h.0, pass, descs, false, strict, &ptrs, None)?
            };
            let plan = Rc::new(Plan {
                x,
                w,
                y,
                conv,
                algo,
                workspace,
            });
            PLANS.with(|p| p.borrow_mut().insert(key, plan.clone()));
            plan
        }
    };
    let (x, w, y, conv) = (plan.x.0, plan.w.0, plan.y.0, plan.conv.0);
    let (one32, zero32, one64, zero64) = (1f32, 0f32, 1f64, 0f64);
    let (alpha, beta): (*const c_void, *const c_void) = if dtype == DType::F64 {
        (&one64 as *const f64 as _, &zero64 as *const f64 as _)
    } else {
        (&one32 as *const f32 as _, &zero32 as *const f32 as _)
    };
    with_workspace(dev, &stream, plan.workspace, |ws, ws_len| {
        // SAFETY: live handle, descriptors matching the buffers' shapes and dtype, workspace of
        // at least the size cuDNN asked for, scalars of the compute type.
        unsafe {
            match plan.algo {
                Algo::Forward(algo) => cr::convolution_forward(
                    h.0, alpha, x, ptrs.a, w, ptrs.b, conv, algo, ws, ws_len, beta, y, ptrs.out,
                ),
                Algo::BackwardData(algo) => cr::convolution_backward_data(
                    h.0, alpha, w, ptrs.b, y, ptrs.a, conv, algo, ws, ws_len, beta, x, ptrs.out,
                ),
                Algo::BackwardFilter(algo) => cr::convolution_backward_filter(
                    h.0, alpha, x, ptrs.a, y, ptrs.b, conv, algo, ws, ws_len, beta, w, ptrs.out,
                ),
            }
        }
        .map_err(|e| err("launch", e))
    })?;
    drop((_sa, _sb, _so));
    Ok(out)
}

fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.slice(a..b)),
        None => candle_core::bail!("conv2d: cuDNN inputs must be contiguous"),
    }
}

/// One pass as a custom op of its two inputs.
struct ConvOp {
    pass: Pass,
    g: Geom,
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "daa_kernels::conv2d_cudnn",
            Pass::BackwardData => "daa_kernels::conv2d_cudnn_bwd_data",
            Pass::BackwardFilter => "daa_kernels::conv2d_cudnn_bwd_filter",
        }
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA only", self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.g;
        let out_dims = match self.pass {
            Pass::Forward => g.y_dims(),
            Pass::BackwardData => g.x_dims(),
            Pass::BackwardFilter => g.w_dims(),
        };
        let n: usize = out_dims.iter().product();
        let dev = s1.device().clone();
        let dtype = s1.dtype();
        let slice =
            match (&s1.slice, &s2.slice) {
                (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b)) => CudaStorageSlice::F32(run(
                    &dev,
                    self.pass,
                    dtype,
                    g,
                    &view(a, l1)?,
                    &view(b, l2)?,
                    n,
                )?),
                (CudaStorageSlice::F64(a), CudaStorageSlice::F64(b)) => CudaStorageSlice::F64(run(
                    &dev,
                    self.pass,
                    dtype,
                    g,
                    &view(a, l1)?,
                    &view(b, l2)?,
                    n,
                )?),
                (CudaStorageSlice::BF16(a), CudaStorageSlice::BF16(b)) => CudaStorageSlice::BF16(
                    run(&dev, self.pass, dtype, g, &view(a, l1)?, &view(b, l2)?, n)?,
                ),
                (CudaStorageSlice::F16(a), CudaStorageSlice::F16(b)) => CudaStorageSlice::F16(run(
                    &dev,
                    self.pass,
                    dtype,
                    g,
                    &view(a, l1)?,
                    &view(b, l2)?,
                    n,
                )?),
                _ => candle_core::bail!(
                    "conv2d: inputs of one dtype (f32, f64, bf16, f16) expected, got {:?} and {:?}",
                    s1.dtype(),
                    s2.dtype()
                ),
            };
        Ok((
            CudaStorage { slice, device: dev },
            Shape::from(out_dims.to_vec()),
        ))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.pass != Pass::Forward {
            candle_core::bail!("{}: no second derivative", self.name());
        }
        let (x, w) = (a, b);
        let grad = grad.contiguous()?;
        // Not tracked: a tracked gradient would keep every layer's output gradient alive
        // until the gradient store is dropped.
        let dx = grad.apply_op2_no_bwd(
            w,
            &ConvOp {
                pass: Pass::BackwardData,
                g: self.g,
            },
        )?;
        let dw = x.apply_op2_no_bwd(
            &grad,
            &ConvOp {
                pass: Pass::BackwardFilter,
                g: self.g,
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// conv2d of CUDA tensors through cuDNN; `None` when the dtype has no cuDNN path (the caller
/// falls back to candle). Shapes were checked by the caller.
pub(crate) fn conv2d(
    xs: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Option<Tensor>> {
    if !matches!(
        xs.dtype(),
        DType::F32 | DType::F64 | DType::BF16 | DType::F16
    ) {
        return Ok(None);
    }
    let (b, c, h, wd) = xs.dims4()?;
    let (o, _, k, _) = w.dims4()?;
    if stride == 0 || h + 2 * padding < k || wd + 2 * padding < k {
        candle_core::bail!(
            "conv2d: kernel {k} stride {stride} padding {padding} does not fit a {h}x{wd} input"
        );
    }
    let g = Geom {
        b,
        c,
        h,
        w: wd,
        o,
        k,
        stride,
        padding,
    };
    xs.contiguous()?
        .apply_op2(
            &w.contiguous()?,
            ConvOp {
                pass: Pass::Forward,
                g,
            },
        )
        .map(Some)
}
