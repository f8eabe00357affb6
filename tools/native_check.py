#!/usr/bin/env python3
"""The native compile lane's check of a built libfastgan_kernels.so, read from its cubins with cuobjdump.

For every architecture asked for (default: sm_90a and sm_80): its SASS is in the library; and for every
kernel in it, registers <= 255, no stack and no local memory (no spills), and static shared memory plus the
most dynamic shared memory the launcher asks for within what one block may have on that GPU. One line per
kernel x architecture, then a summary; exit status 0 when everything holds, 1 when something does not, 2
when the check cannot run.

    python tools/native_check.py build/libfastgan_kernels.so [--cuobjdump PATH] [--arch sm_90a sm_80]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

# What one block may have (cudaDevAttrMaxSharedMemoryPerBlockOptin), by architecture.
SHARED_LIMIT = {"sm_80": 166_912, "sm_86": 101_376, "sm_89": 101_376, "sm_90": 232_448, "sm_90a": 232_448}
# The most dynamic shared memory kernels/fastgan_kernels.cu asks for: two 16 x 1024 fp32 activation buffers
# and 4 warps x 1 KB of staging (chain_shared_bytes at FG_MAX_WIDTH).
CHAIN_BYTES = (2 * 16 * 1024 + 4 * 256) * 4
MAX_DYNAMIC = {"mlp_forward_kernel": CHAIN_BYTES, "mlp_backward_kernel": CHAIN_BYTES}
RESOURCES = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def _short(mangled: str) -> str:
    for name in ("mlp_forward_kernel", "mlp_backward_kernel", "mlp_weight_grad_kernel", "bce_forward_kernel",
                 "bce_backward_kernel"):
        if name in mangled:
            template = re.search(r"ILi(\d)E", mangled)
            precision = {"0": "fp32", "1": "tf32", "2": "bf16"}.get(template.group(1)) if template else None
            return f"{name}<{precision}>" if precision else name
    return mangled


def check(library: Path, cuobjdump: str, archs: list[str]) -> int:
    elves = subprocess.run([cuobjdump, "--list-elf", str(library)], capture_output=True, text=True)
    if elves.returncode != 0:
        print(f"ERROR cuobjdump --list-elf: {elves.stderr.strip()}")
        return 2
    failures = 0
    for arch in archs:
        if f".{arch}.cubin" not in elves.stdout:
            print(f"FAIL {arch}: no SASS for it in {library.name} (cuobjdump lists: {elves.stdout.split()})")
            failures += 1
            continue
        usage = subprocess.run([cuobjdump, "-res-usage", "-arch", arch, str(library)], capture_output=True, text=True)
        kernels = RESOURCES.findall(usage.stdout)
        if not kernels:
            print(f"FAIL {arch}: cuobjdump -res-usage listed no kernel")
            failures += 1
        for mangled, reg, stack, shared, local in kernels:
            name = _short(mangled)
            dynamic = next((v for k, v in MAX_DYNAMIC.items() if k in mangled), 0)
            total = int(shared) + dynamic
            problems = []
            if int(reg) > 255:
                problems.append(f"{reg} registers")
            if int(stack) or int(local):
                problems.append(f"spills: stack {stack} B, local {local} B")
            if total > SHARED_LIMIT.get(arch, 49_152):
                problems.append(f"shared {total} B over {SHARED_LIMIT.get(arch, 49_152)} B")
            failures += bool(problems)
            print(f"{'FAIL' if problems else 'OK  '} {arch:7s} {name:32s} regs {reg:>3s}, stack {stack} B, "
                  f"local {local} B, shared {shared} B static + {dynamic} B dynamic at most"
                  + (f": {'; '.join(problems)}" if problems else ""))
    print(f"SUMMARY: {'FAIL' if failures else 'OK'}: {failures} problem(s); {library} for {', '.join(archs)}")
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("library", type=Path)
    parser.add_argument("--cuobjdump", default=None, help="default: cuobjdump on PATH")
    parser.add_argument("--arch", nargs="+", default=["sm_90a", "sm_80"])
    args = parser.parse_args(argv)
    cuobjdump = args.cuobjdump or shutil.which("cuobjdump")
    if cuobjdump is None:
        print("ERROR: no cuobjdump (pip install nvidia-cuda-cuobjdump, or the CUDA toolkit's)")
        return 2
    if not args.library.is_file():
        print(f"ERROR: {args.library} does not exist: build it with cmake -S . -B build && cmake --build build")
        return 2
    return check(args.library, cuobjdump, args.arch)


if __name__ == "__main__":
    sys.exit(main())
