"""Floating-point operation counts of the networks, from their architecture.

A multiply-add counts as 2 FLOPs. Counted: every convolution (the modulated 3x3 and
1x1 convolutions, the stride-2 transposed convolutions at the taps that touch real
input pixels, i.e. ``k*k*C_in*C_out`` per *input* pixel) and every linear layer
(mapping MLP, style modulations, and the demodulation's ``s^2 @ sum(w^2)``, which is a
matrix product per sample). Not counted: the FIR blurs, activations, noise injection
and normalisations (together well under 1% at 256 px). These are the operations the
architecture asks for, whatever the implementation executes, so achieved GFLOP/s =
count / measured time is comparable across implementations and machines.
"""

from __future__ import annotations

from dataclasses import dataclass

from sage_jax.nn.stylegan2 import default_channels


@dataclass(frozen=True)
class FlopCount:
    """Per-image FLOPs, split by kind."""

    convolutions: int
    linear: int

    @property
    def total(self) -> int:
        return self.convolutions + self.linear


def generator_flops(size: int, style_dim: int = 512, n_mlp: int = 8, channels=None, *,
                    mapping: bool = False, c_dim: int = 0, kernel_size: int = 3) -> FlopCount:
    """FLOPs of one StyleGAN2 generator forward for one image.

    ``mapping=False`` counts the synthesis from W+ codes (what SAGE decodes);
    ``mapping=True`` adds the mapping MLP (from z)."""
    ch = dict(channels) if channels is not None else dict(default_channels(size))
    k2 = kernel_size * kernel_size
    conv = lin = 0

    def modulated(c_in, c_out, k2_, pixels, demod=True):
        nonlocal conv, lin
        conv += 2 * k2_ * c_in * c_out * pixels
        lin += 2 * style_dim * c_in                 # modulation (equalized linear)
        if demod:
            lin += 2 * c_in * c_out                  # s^2 @ sum_k w^2

    c4 = ch[4]
    modulated(c4, c4, k2, 16)                        # conv1
    modulated(c4, 3, 1, 16, demod=False)             # to_rgb1
    res, c_prev = 8, c4
    while res <= size:
        c = ch[res]
        modulated(c_prev, c, k2, (res // 2) ** 2)    # transposed conv: k*k taps per input pixel
        modulated(c, c, k2, res * res)
        modulated(c, 3, 1, res * res, demod=False)   # to_rgb
        c_prev, res = c, res * 2
    if mapping:
        lin += 2 * n_mlp * style_dim * style_dim
        if c_dim:
            # the label embedding, and the first layer's doubled input (z joined with it)
            lin += 2 * c_dim * style_dim + 2 * style_dim * style_dim
    return FlopCount(conv, lin)


def matmul_flops(n: int) -> int:
    """FLOPs of an (n, n) @ (n, n) matrix product."""
    return 2 * n ** 3
