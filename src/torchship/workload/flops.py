"""Model FLOPs per token and the peak dense bf16 throughput of common GPUs, for MFU.

MFU = achieved model FLOP/s ÷ the device's peak (Chowdhery et al. 2022, "PaLM", appendix B):
training costs 6·N FLOPs per token for N matmul parameters (forward 2N, backward 4N) plus
12·L·d·T for attention scores and values (L layers, width d, context T). Pure: no torch.
"""

from __future__ import annotations

# Dense (no 2:4 sparsity) BF16 tensor-core TFLOP/s, from NVIDIA's datasheets; the sparse
# figures they headline are exactly twice these. Keys are matched as substrings of
# torch.cuda.get_device_name(), most specific first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),  # GH200 datasheet (H100 SXM-class GPU)
    ("H200", 989.0),  # H200 datasheet: 1,979 sparse
    ("H100 NVL", 835.0),  # H100 datasheet, NVL column: 1,671 sparse
    ("H100 PCIe", 756.0),  # H100 datasheet, PCIe column: 1,513 sparse
    ("H100", 989.0),  # H100 datasheet, SXM column: 1,979 sparse
    ("H800", 989.0),  # H800 SXM: same tensor cores as H100 SXM
    ("B200", 2250.0),  # HGX B200 datasheet: 4.5 PF sparse per GPU (preliminary figures)
    ("A100", 312.0),  # A100 datasheet: 624 sparse (SXM and PCIe)
    ("A800", 312.0),
    ("L40S", 362.0),  # L40S datasheet: 733 sparse
    ("L40", 181.0),  # L40 datasheet: 362 sparse
    ("L4", 121.0),  # L4 datasheet: 242 sparse
    ("A10G", 70.0),  # uncertain: no NVIDIA datasheet; figure quoted for AWS G5, 140 sparse
    ("A10", 125.0),  # A10 datasheet: 250 sparse
    ("RTX 6000 Ada", 364.0),  # RTX 6000 Ada datasheet: 728.5 sparse (FP32 accumulate)
    ("RTX 4090", 165.2),  # Ada whitepaper: FP16/BF16 with FP32 accumulate, 330.3 sparse
    ("RTX 3090", 71.0),  # Ampere GA102 whitepaper: 142 sparse (FP32 accumulate)
)


def peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def flops_per_token(matmul_params: int, layers: int, d_model: int, seq_len: int) -> int:
    return 6 * matmul_params + 12 * layers * d_model * seq_len


def mfu(tokens_per_s: float, flops_token: int, peak_tflops_per_gpu: float, gpus: int) -> float:
    return tokens_per_s * flops_token / (peak_tflops_per_gpu * 1e12 * gpus)
