/* fastgan's native CUDA kernels: a narrow C ABI (raw pointers, sizes, strides, a cudaStream_t as void*).
 *
 * Every function returns FG_OK (0) or an error code; fg_last_error() gives the text of the calling thread's
 * last error. Nothing here needs PyTorch: the library builds and links with the CUDA toolkit alone.
 * Tensors are float32, row-major (rows x columns, a row stride in elements, columns contiguous).
 *
 * The MLP: dims[0] -> dims[1] -> ... -> dims[layers]; layer l computes y_l = act_l(y_{l-1} W_l^T + b_l) with
 * y_0 = x, act_l the hidden activation for l < layers and the output activation for the last layer.
 * params holds W_0 (dims[1] x dims[0]), b_0 (dims[1], when has_bias), W_1, b_1, ... back to back, row-major
 * (nn.Linear's layout). out holds every layer's output side by side: rows x sum(dims[1..layers]), layer l's
 * columns starting at sum(dims[1..l]); the MLP's output is the last dims[layers] columns.
 */
#ifndef FASTGAN_KERNELS_H
#define FASTGAN_KERNELS_H

#include <stdint.h>

#if defined(_WIN32)
#define FG_API __declspec(dllexport)
#else
#define FG_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FG_ABI_VERSION 1
#define FG_MAX_LAYERS 8
#define FG_MAX_WIDTH 1024

enum fg_status { FG_OK = 0, FG_INVALID_ARGUMENT = 1, FG_CUDA_ERROR = 2 };
enum fg_activation { FG_NONE = 0, FG_RELU = 1, FG_LEAKY_RELU = 2, FG_SIGMOID = 3, FG_TANH = 4 };
/* fp32: exact fp32 FMAs. tf32 / bf16: tensor cores (WMMA) with operands rounded to tf32 / bf16 and fp32
 * accumulation; fp32 weights and outputs either way. */
enum fg_precision { FG_FP32 = 0, FG_TF32 = 1, FG_BF16 = 2 };

/* FG_ABI_VERSION of the library: a loader checks it against the header it was written for. */
FG_API int fg_abi_version(void);

/* The calling thread's last error, or "" after a success. */
FG_API const char* fg_last_error(void);

/* Forward pass of the MLP on rows x dims[0] inputs (row stride x_stride); writes out (see above). */
FG_API int fg_mlp_forward(const float* x, int64_t x_stride, int64_t rows, const float* params, const int32_t* dims,
                   int32_t layers, int32_t has_bias, int32_t hidden_activation, int32_t output_activation,
                   float negative_slope, int32_t precision, float* out, void* stream);

/* Backward pass from dy (rows x dims[layers], row stride dy_stride) and the forward's out:
 *   grads   rows x sum(dims[1..]) workspace: each layer's pre-activation gradient g_l (as out's columns);
 *   dx      rows x dims[0], contiguous, or NULL when the input needs no gradient;
 *   dparams the gradient of params (same layout), or NULL when the weights need none (then x may be NULL). */
FG_API int fg_mlp_backward(const float* x, int64_t x_stride, const float* dy, int64_t dy_stride, int64_t rows,
                    const float* params, const int32_t* dims, int32_t layers, int32_t has_bias,
                    int32_t hidden_activation, int32_t output_activation, float negative_slope, int32_t precision,
                    const float* out, float* grads, float* dx, float* dparams, void* stream);

/* Mean sigmoid binary cross-entropy of n logits against targets (n of them) or, when targets is NULL, the
 * constant target: one float written to loss (device memory). One block: deterministic. */
FG_API int fg_bce_forward(const float* logits, const float* targets, float target, int64_t n, float* loss, void* stream);

/* d(mean BCE)/d(logits) times dloss[0] (device memory): (sigmoid(x) - t) * dloss / n. */
FG_API int fg_bce_backward(const float* logits, const float* targets, float target, int64_t n, const float* dloss,
                    float* dlogits, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* FASTGAN_KERNELS_H */
