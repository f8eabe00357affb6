// fastgan's native CUDA kernels: the whole MLP forward and backward for GAN shapes, and sigmoid-BCE.
//
// Layout of the work (the ABI is in fastgan_kernels.h):
//  * mlp_forward_kernel: a block of BM = 16 rows through every layer. The block's activations stay in
//    shared memory (two buffers of 16 x width, padded to a multiple of 16 with zeros), each layer's output
//    is also written to global memory (the backward reads it). Weights stream from global memory (L2)
//    through a small per-warp staging tile, so any width up to 1024 fits (tiny-cuda-nn keeps the weights
//    in shared memory, which limits it to width 128). Products on tensor cores with WMMA: tf32 m16n16k8
//    or bf16 m16n16k16, fp32 accumulation; or plain fp32 FMAs for exact fp32.
//  * mlp_backward_kernel: the same blocks of rows, the gradient chain down the layers
//    (g_{l-1} = (g_l W_l) * act'(y_{l-1}), act' recovered from the saved outputs), every g_l written to a
//    workspace, and dX.
//  * mlp_weight_grad_kernel: dW_l = g_l^T y_{l-1} and db_l = sum of g_l over the rows, for every layer in
//    one launch (a 32 x 32 tile of one layer's dW per block, the rows looped inside: deterministic, no
//    atomics), fp32 FMAs.
//  * bce kernels: one block reduces the mean loss (deterministic); the backward is element-wise.
// Offsets that can pass 2^31 (row * stride) are 64-bit. Nothing allocates or synchronises: every call is
// launches on the caller's stream, so a CUDA graph can capture it.
#include "fastgan_kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdarg>
#include <cstdio>

using namespace nvcuda;

namespace {

thread_local char g_error[512] = "";

int fail(int code, const char* format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(g_error, sizeof g_error, format, args);
    va_end(args);
    return code;
}

int succeed() {
    g_error[0] = '\0';
    return FG_OK;
}

int launched(const char* what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return fail(FG_CUDA_ERROR, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return succeed();
}

constexpr int BM = 16;            // rows per block (one WMMA M tile)
constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;
constexpr int STAGE = 256;        // floats of staging per warp (1 KB)

struct Mlp {
    int layers;
    int dims[FG_MAX_LAYERS + 1];
    long long w[FG_MAX_LAYERS];   // offset of W_l in params
    long long b[FG_MAX_LAYERS];   // offset of b_l, or -1 (no bias)
    int col[FG_MAX_LAYERS];       // first column of layer l in out and grads
    int out_cols;
    int act[FG_MAX_LAYERS];
    float slope;
    int pad;                      // the widest layer, rounded up to 16
};

__host__ __device__ constexpr int round16(int v) { return (v + 15) / 16 * 16; }

__device__ __forceinline__ float activate(float v, int act, float slope) {
    switch (act) {
        case FG_RELU: return v > 0.f ? v : 0.f;
        case FG_LEAKY_RELU: return v > 0.f ? v : v * slope;
        case FG_SIGMOID: return 1.f / (1.f + expf(-v));
        case FG_TANH: return tanhf(v);
        default: return v;
    }
}

// act'(x) from y = act(x)
__device__ __forceinline__ float derivative(float y, int act, float slope) {
    switch (act) {
        case FG_RELU: return y > 0.f ? 1.f : 0.f;
        case FG_LEAKY_RELU: return y > 0.f ? 1.f : slope;
        case FG_SIGMOID: return y * (1.f - y);
        case FG_TANH: return 1.f - y * y;
        default: return 1.f;
    }
}

// C (16 x C) = A (16 x R, shared, row-major, leading dimension lda) times B, B(r, c) = W[r * sr + c * sc]
// for r < R, c < C (zero outside), in exact fp32. C's padding columns are left alone.
__device__ void product_fp32(const float* A, int lda, int R, const float* __restrict__ W, long long sr,
                             long long sc, int C, float* out, int ldc) {
    for (int idx = threadIdx.x; idx < BM * C; idx += THREADS) {
        const int m = idx / C, c = idx % C;
        const float* a = A + m * lda;
        const float* w = W + c * sc;
        float acc = 0.f;
        for (int r = 0; r < R; ++r) acc = fmaf(a[r], __ldg(w + r * sr), acc);
        out[m * ldc + c] = acc;
    }
}

// The same product on tensor cores, every output tile (C padded to Cp) written: P = FG_TF32 or FG_BF16.
// A's padding columns (R..Rp) must be zero. Each warp takes every WARPS-th 16-column tile.
template <int P>
__device__ void product_tc(const float* A, int lda, int Rp, const float* __restrict__ W, long long sr,
                           long long sc, int R, int C, float* out, int ldc, int Cp, float* stage) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if constexpr (P == FG_TF32) {
        constexpr int KK = 8;
        float* sb = stage + warp * STAGE;   // B tile, column-major: (r, c) at c * KK + r
        for (int c0 = warp * 16; c0 < Cp; c0 += WARPS * 16) {
            wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
            wmma::fill_fragment(acc, 0.f);
            for (int r0 = 0; r0 < Rp; r0 += KK) {
                for (int e = lane; e < 16 * KK; e += 32) {
                    const int cc = e / KK, rr = e % KK, r = r0 + rr, c = c0 + cc;
                    sb[cc * KK + rr] = (r < R && c < C) ? __ldg(W + r * sr + c * sc) : 0.f;
                }
                __syncwarp();
                wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> b;
                wmma::load_matrix_sync(a, A + r0, lda);
                wmma::load_matrix_sync(b, sb, KK);
#pragma unroll
                for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
#pragma unroll
                for (int i = 0; i < b.num_elements; ++i) b.x[i] = wmma::__float_to_tf32(b.x[i]);
                wmma::mma_sync(acc, a, b, acc);
                __syncwarp();
            }
            wmma::store_matrix_sync(out + c0, acc, ldc, wmma::mem_row_major);
        }
    } else {
        constexpr int KK = 16;
        __nv_bfloat16* sa = reinterpret_cast<__nv_bfloat16*>(stage + warp * STAGE);   // 16 x 16, row-major
        __nv_bfloat16* sb = sa + 16 * KK;                                              // column-major
        for (int c0 = warp * 16; c0 < Cp; c0 += WARPS * 16) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.f);
            for (int r0 = 0; r0 < Rp; r0 += KK) {
                for (int e = lane; e < 16 * KK; e += 32) {
                    const int i = e / KK, rr = e % KK, r = r0 + rr, c = c0 + i;
                    sa[i * KK + rr] = __float2bfloat16(A[i * lda + r]);
                    sb[i * KK + rr] = __float2bfloat16((r < R && c < C) ? __ldg(W + r * sr + c * sc) : 0.f);
                }
                __syncwarp();
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                wmma::load_matrix_sync(a, sa, KK);
                wmma::load_matrix_sync(b, sb, KK);
                wmma::mma_sync(acc, a, b, acc);
                __syncwarp();
            }
            wmma::store_matrix_sync(out + c0, acc, ldc, wmma::mem_row_major);
        }
    }
}

template <int P>
__device__ __forceinline__ void product(const float* A, int lda, int R, const float* __restrict__ W, long long sr,
                                        long long sc, int C, float* out, int ldc, float* stage) {
    if constexpr (P == FG_FP32) {
        product_fp32(A, lda, R, W, sr, sc, C, out, ldc);
    } else {
        product_tc<P>(A, lda, round16(R), W, sr, sc, R, C, out, ldc, round16(C), stage);
    }
}

template <int P>
__global__ void __launch_bounds__(THREADS) mlp_forward_kernel(const float* __restrict__ x, long long x_stride,
                                                               long long rows, const float* __restrict__ params,
                                                               Mlp mlp, float* __restrict__ out) {
    extern __shared__ __align__(128) float smem[];
    float* in = smem;
    float* result = smem + BM * mlp.pad;
    float* stage = result + BM * mlp.pad;
    const long long row0 = static_cast<long long>(blockIdx.x) * BM;
    const int K0 = mlp.dims[0], K0p = round16(K0);
    for (int idx = threadIdx.x; idx < BM * K0p; idx += THREADS) {
        const int m = idx / K0p, k = idx % K0p;
        const long long row = row0 + m;
        in[idx] = (k < K0 && row < rows) ? x[row * x_stride + k] : 0.f;
    }
    __syncthreads();
    for (int l = 0; l < mlp.layers; ++l) {
        const int K = mlp.dims[l], N = mlp.dims[l + 1], Kp = round16(K), Np = round16(N);
        product<P>(in, Kp, K, params + mlp.w[l], 1, K, N, result, Np, stage);
        __syncthreads();
        for (int idx = threadIdx.x; idx < BM * Np; idx += THREADS) {
            const int m = idx / Np, n = idx % Np;
            const long long row = row0 + m;
            float v = 0.f;   // padding columns stay zero: the next layer's products read them
            if (n < N) {
                v = result[idx];
                if (mlp.b[l] >= 0) v += __ldg(params + mlp.b[l] + n);
                v = activate(v, mlp.act[l], mlp.slope);
                if (row < rows) out[row * mlp.out_cols + mlp.col[l] + n] = v;
            }
            result[idx] = v;
        }
        __syncthreads();
        float* t = in;
        in = result;
        result = t;
    }
}

template <int P>
__global__ void __launch_bounds__(THREADS) mlp_backward_kernel(const float* __restrict__ dy, long long dy_stride,
                                                                long long rows, const float* __restrict__ params,
                                                                Mlp mlp, const float* __restrict__ out,
                                                                float* __restrict__ grads, float* __restrict__ dx) {
    extern __shared__ __align__(128) float smem[];
    float* g = smem;
    float* h = smem + BM * mlp.pad;
    float* stage = h + BM * mlp.pad;
    const long long row0 = static_cast<long long>(blockIdx.x) * BM;
    const int L = mlp.layers, NL = mlp.dims[L], NLp = round16(NL);
    for (int idx = threadIdx.x; idx < BM * NLp; idx += THREADS) {
        const int m = idx / NLp, n = idx % NLp;
        const long long row = row0 + m;
        float v = 0.f;
        if (n < NL && row < rows) {
            const long long at = row * mlp.out_cols + mlp.col[L - 1] + n;
            v = dy[row * dy_stride + n] * derivative(out[at], mlp.act[L - 1], mlp.slope);
            grads[at] = v;
        }
        g[idx] = v;
    }
    __syncthreads();
    for (int l = L - 1; l >= 0; --l) {
        if (l == 0 && dx == nullptr) break;
        const int K = mlp.dims[l], N = mlp.dims[l + 1], Kp = round16(K), Np = round16(N);
        // h (16 x K) = g_l (16 x N) W_l (N x K): B(r = n, c = k) = W[n * K + k]
        product<P>(g, Np, N, params + mlp.w[l], K, 1, K, h, Kp, stage);
        __syncthreads();
        for (int idx = threadIdx.x; idx < BM * Kp; idx += THREADS) {
            const int m = idx / Kp, k = idx % Kp;
            const long long row = row0 + m;
            float v = 0.f;
            if (k < K && row < rows) {
                v = h[idx];
                if (l > 0) {
                    const long long at = row * mlp.out_cols + mlp.col[l - 1] + k;
                    v *= derivative(out[at], mlp.act[l - 1], mlp.slope);
                    grads[at] = v;
                } else {
                    dx[row * K + k] = v;
                }
            }
            h[idx] = v;
        }
        __syncthreads();
        float* t = g;
        g = h;
        h = t;
    }
}

struct Tiles {
    int start[FG_MAX_LAYERS + 1];   // the first block of each layer's dW tiles; start[layers] = all blocks
};

constexpr int WT = 32;

__global__ void __launch_bounds__(256) mlp_weight_grad_kernel(const float* __restrict__ x, long long x_stride,
                                                               long long rows, Mlp mlp, Tiles tiles,
                                                               const float* __restrict__ out,
                                                               const float* __restrict__ grads,
                                                               float* __restrict__ dparams) {
    __shared__ float gs[WT][WT + 1];   // [row][n]
    __shared__ float xs[WT][WT + 1];   // [row][k]
    int t = blockIdx.x, l = 0;
    while (l + 1 < mlp.layers && t >= tiles.start[l + 1]) ++l;
    t -= tiles.start[l];
    const int K = mlp.dims[l], N = mlp.dims[l + 1];
    const int k_tiles = (K + WT - 1) / WT;
    const int n0 = (t / k_tiles) * WT, k0 = (t % k_tiles) * WT;
    const float* xin = l == 0 ? x : out + mlp.col[l - 1];
    const long long xin_stride = l == 0 ? x_stride : mlp.out_cols;
    const float* g = grads + mlp.col[l];
    const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;   // ty in 0..7: rows n0 + ty + 8 j
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float bias = 0.f;
    for (long long r0 = 0; r0 < rows; r0 += WT) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int r = ty + 8 * j;
            const long long row = r0 + r;
            gs[r][tx] = (row < rows && n0 + tx < N) ? g[row * mlp.out_cols + n0 + tx] : 0.f;
            xs[r][tx] = (row < rows && k0 + tx < K) ? xin[row * xin_stride + k0 + tx] : 0.f;
        }
        __syncthreads();
        for (int r = 0; r < WT; ++r) {
            const float xv = xs[r][tx];
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[j] = fmaf(gs[r][ty + 8 * j], xv, acc[j]);
            if (k0 == 0 && ty == 0) bias += gs[r][tx];
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int n = n0 + ty + 8 * j, k = k0 + tx;
        if (n < N && k < K) dparams[mlp.w[l] + static_cast<long long>(n) * K + k] = acc[j];
    }
    if (k0 == 0 && ty == 0 && mlp.b[l] >= 0 && n0 + tx < N) dparams[mlp.b[l] + n0 + tx] = bias;
}

__global__ void __launch_bounds__(1024) bce_forward_kernel(const float* __restrict__ logits,
                                                            const float* __restrict__ targets, float target,
                                                            long long n, float* __restrict__ loss) {
    __shared__ float partial[32];
    double sum = 0.0;   // each thread adds n / 1024 terms: in double, so millions of logits lose nothing
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const float x = logits[i], t = targets != nullptr ? targets[i] : target;
        sum += fmaxf(x, 0.f) - x * t + log1pf(expf(-fabsf(x)));
    }
    float s = static_cast<float>(sum);
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
        for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
        if (threadIdx.x == 0) loss[0] = s / static_cast<float>(n);   // n = 0: NaN, as torch's mean
    }
}

__global__ void bce_backward_kernel(const float* __restrict__ logits, const float* __restrict__ targets, float target,
                                    long long n, const float* __restrict__ dloss, float* __restrict__ dlogits) {
    const float scale = dloss[0] / static_cast<float>(n);
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const float t = targets != nullptr ? targets[i] : target;
        dlogits[i] = (1.f / (1.f + expf(-logits[i])) - t) * scale;
    }
}

int describe(const int32_t* dims, int32_t layers, int32_t has_bias, int32_t hidden, int32_t output, float slope,
             int32_t precision, Mlp* mlp) {
    if (dims == nullptr) return fail(FG_INVALID_ARGUMENT, "dims is NULL");
    if (layers < 1 || layers > FG_MAX_LAYERS)
        return fail(FG_INVALID_ARGUMENT, "layers must be 1..%d, got %d", FG_MAX_LAYERS, layers);
    if (hidden < FG_NONE || hidden > FG_TANH) return fail(FG_INVALID_ARGUMENT, "unknown activation code %d", hidden);
    if (output < FG_NONE || output > FG_TANH) return fail(FG_INVALID_ARGUMENT, "unknown activation code %d", output);
    if (precision < FG_FP32 || precision > FG_BF16)
        return fail(FG_INVALID_ARGUMENT, "unknown precision code %d", precision);
    if (!(slope >= 0.f) || slope > 3.4e38f)
        return fail(FG_INVALID_ARGUMENT, "negative_slope must be a finite number >= 0");
    mlp->layers = layers;
    mlp->slope = slope;
    mlp->pad = 0;
    long long offset = 0;
    int column = 0;
    for (int l = 0; l <= layers; ++l) {
        if (dims[l] < 1 || dims[l] > FG_MAX_WIDTH)
            return fail(FG_INVALID_ARGUMENT, "dims[%d] = %d: widths must be 1..%d", l, dims[l], FG_MAX_WIDTH);
        mlp->dims[l] = dims[l];
        if (round16(dims[l]) > mlp->pad) mlp->pad = round16(dims[l]);
    }
    for (int l = 0; l < layers; ++l) {
        mlp->w[l] = offset;
        offset += static_cast<long long>(dims[l]) * dims[l + 1];
        mlp->b[l] = has_bias ? offset : -1;
        offset += has_bias ? dims[l + 1] : 0;
        mlp->col[l] = column;
        column += dims[l + 1];
        mlp->act[l] = l == layers - 1 ? output : hidden;
    }
    mlp->out_cols = column;
    return FG_OK;
}

size_t chain_shared_bytes(const Mlp& mlp) { return (2 * BM * mlp.pad + WARPS * STAGE) * sizeof(float); }

// Let a kernel take `bytes` of dynamic shared memory over the default 48 KB. The attribute holds per device,
// so it is set at every such launch (a host call, no stream work: allowed during graph capture).
template <typename Kernel>
int allow_shared(Kernel kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return FG_OK;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)) != cudaSuccess)
        return launched("cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    return FG_OK;
}

template <int P>
int forward(const float* x, long long x_stride, long long rows, const float* params, const Mlp& mlp, float* out,
            cudaStream_t stream) {
    const size_t bytes = chain_shared_bytes(mlp);
    if (int e = allow_shared(mlp_forward_kernel<P>, bytes)) return e;
    const unsigned blocks = static_cast<unsigned>((rows + BM - 1) / BM);
    mlp_forward_kernel<P><<<blocks, THREADS, bytes, stream>>>(x, x_stride, rows, params, mlp, out);
    return launched("mlp_forward_kernel");
}

template <int P>
int backward_chain(const float* dy, long long dy_stride, long long rows, const float* params, const Mlp& mlp,
                   const float* out, float* grads, float* dx, cudaStream_t stream) {
    const size_t bytes = chain_shared_bytes(mlp);
    if (int e = allow_shared(mlp_backward_kernel<P>, bytes)) return e;
    const unsigned blocks = static_cast<unsigned>((rows + BM - 1) / BM);
    mlp_backward_kernel<P><<<blocks, THREADS, bytes, stream>>>(dy, dy_stride, rows, params, mlp, out, grads, dx);
    return launched("mlp_backward_kernel");
}

}  // namespace

extern "C" {

int fg_abi_version(void) { return FG_ABI_VERSION; }

const char* fg_last_error(void) { return g_error; }

int fg_mlp_forward(const float* x, int64_t x_stride, int64_t rows, const float* params, const int32_t* dims,
                   int32_t layers, int32_t has_bias, int32_t hidden_activation, int32_t output_activation,
                   float negative_slope, int32_t precision, float* out, void* stream) {
    Mlp mlp;
    if (int e = describe(dims, layers, has_bias, hidden_activation, output_activation, negative_slope, precision, &mlp))
        return e;
    if (rows < 0) return fail(FG_INVALID_ARGUMENT, "rows must be >= 0, got %lld", static_cast<long long>(rows));
    if (rows == 0) return succeed();
    if (x == nullptr || params == nullptr || out == nullptr)
        return fail(FG_INVALID_ARGUMENT, "x, params and out must not be NULL");
    if (x_stride < dims[0]) return fail(FG_INVALID_ARGUMENT, "x_stride %lld is less than dims[0] = %d",
                                        static_cast<long long>(x_stride), dims[0]);
    if ((rows + BM - 1) / BM > 0x7fffffffLL) return fail(FG_INVALID_ARGUMENT, "too many rows");
    auto s = static_cast<cudaStream_t>(stream);
    switch (precision) {
        case FG_FP32: return forward<FG_FP32>(x, x_stride, rows, params, mlp, out, s);
        case FG_TF32: return forward<FG_TF32>(x, x_stride, rows, params, mlp, out, s);
        default: return forward<FG_BF16>(x, x_stride, rows, params, mlp, out, s);
    }
}

int fg_mlp_backward(const float* x, int64_t x_stride, const float* dy, int64_t dy_stride, int64_t rows,
                    const float* params, const int32_t* dims, int32_t layers, int32_t has_bias,
                    int32_t hidden_activation, int32_t output_activation, float negative_slope, int32_t precision,
                    const float* out, float* grads, float* dx, float* dparams, void* stream) {
    Mlp mlp;
    if (int e = describe(dims, layers, has_bias, hidden_activation, output_activation, negative_slope, precision, &mlp))
        return e;
    if (rows < 0) return fail(FG_INVALID_ARGUMENT, "rows must be >= 0, got %lld", static_cast<long long>(rows));
    if (rows > 0 && (dy == nullptr || params == nullptr || out == nullptr || grads == nullptr))
        return fail(FG_INVALID_ARGUMENT, "dy, params, out and grads must not be NULL");
    if (rows > 0 && dparams != nullptr && (x == nullptr || x_stride < dims[0]))
        return fail(FG_INVALID_ARGUMENT, "the weight gradient needs x with x_stride >= dims[0]");
    if (dy_stride < dims[layers]) return fail(FG_INVALID_ARGUMENT, "dy_stride is less than dims[layers]");
    if ((rows + BM - 1) / BM > 0x7fffffffLL) return fail(FG_INVALID_ARGUMENT, "too many rows");
    auto s = static_cast<cudaStream_t>(stream);
    if (rows > 0) {
        int e;
        switch (precision) {
            case FG_FP32: e = backward_chain<FG_FP32>(dy, dy_stride, rows, params, mlp, out, grads, dx, s); break;
            case FG_TF32: e = backward_chain<FG_TF32>(dy, dy_stride, rows, params, mlp, out, grads, dx, s); break;
            default: e = backward_chain<FG_BF16>(dy, dy_stride, rows, params, mlp, out, grads, dx, s); break;
        }
        if (e) return e;
    }
    if (dparams == nullptr) return succeed();
    Tiles tiles;
    tiles.start[0] = 0;
    for (int l = 0; l < layers; ++l)
        tiles.start[l + 1] = tiles.start[l] + ((dims[l + 1] + WT - 1) / WT) * ((dims[l] + WT - 1) / WT);
    // rows = 0: every gradient is a sum over no rows, i.e. zero; the kernel writes those zeros too
    mlp_weight_grad_kernel<<<tiles.start[layers], 256, 0, s>>>(x, x_stride, rows, mlp, tiles, out, grads, dparams);
    return launched("mlp_weight_grad_kernel");
}

int fg_bce_forward(const float* logits, const float* targets, float target, int64_t n, float* loss, void* stream) {
    if (n < 0) return fail(FG_INVALID_ARGUMENT, "n must be >= 0");
    if (logits == nullptr || loss == nullptr) return fail(FG_INVALID_ARGUMENT, "logits and loss must not be NULL");
    if (targets == nullptr && !(target >= 0.f && target <= 1.f))
        return fail(FG_INVALID_ARGUMENT, "target must be in [0, 1]");
    bce_forward_kernel<<<1, 1024, 0, static_cast<cudaStream_t>(stream)>>>(logits, targets, target, n, loss);
    return launched("bce_forward_kernel");
}

int fg_bce_backward(const float* logits, const float* targets, float target, int64_t n, const float* dloss,
                    float* dlogits, void* stream) {
    if (n < 0) return fail(FG_INVALID_ARGUMENT, "n must be >= 0");
    if (n == 0) return succeed();
    if (logits == nullptr || dloss == nullptr || dlogits == nullptr)
        return fail(FG_INVALID_ARGUMENT, "logits, dloss and dlogits must not be NULL");
    const long long blocks = (n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096;
    bce_backward_kernel<<<static_cast<unsigned>(blocks), 256, 0, static_cast<cudaStream_t>(stream)>>>(
        logits, targets, target, n, dloss, dlogits);
    return launched("bce_backward_kernel");
}

}  // extern "C"
