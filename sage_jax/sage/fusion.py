"""SAGE's two post-hoc fusion tricks, SAGE_p (pixel domain) and SAGE_f (frequency domain).

Both take the real image, its GAN inversion and the edited (generated) image and put
back detail the inversion lost. They follow the official numpy scripts
(``tools/sage_p.py: combine`` and ``tools/sage_f.py: freq_conpensate``) by default and
are written as vectorised ``jnp`` code: images are uint8 arrays of shape
``(..., H, W, 3)`` with any leading batch dimensions, the math is per channel (the
channel order does not matter; the official scripts read BGR with cv2).

Every function can be wrapped in ``jax.jit``; the string / size options (``band``,
``formula``, ``method``, ``ksize``, ``exact_abs``) must then be static, e.g.
``jax.jit(sage_f, static_argnames=("band", "formula"))``. Floating-point work runs in
float64 when ``jax_enable_x64`` is on and in float32 otherwise; the uint8 results agree
with the reference to within 1 (truncation of values that sit on an integer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["sage_p", "sage_f", "fuse", "diff_mask", "gaussian_kernel"]


def _float_dtype():
    """float64 if x64 is enabled, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _check_images(real, inversion, edited, fname: str):
    arrays = [jnp.asarray(a) for a in (real, inversion, edited)]
    names = ("real", "inversion", "edited")
    for name, a in zip(names, arrays):
        if a.ndim < 3 or a.shape[-1] != 3:
            raise ValueError(f"{fname}: {name} must have shape (..., H, W, 3), got {a.shape}")
        if a.dtype != jnp.uint8:
            raise TypeError(f"{fname}: {name} must be uint8 (0..255), got dtype {a.dtype}")
    shapes = [a.shape for a in arrays]
    if not (shapes[0] == shapes[1] == shapes[2]):
        raise ValueError(
            f"{fname}: real, inversion and edited must have the same shape, got "
            f"real {shapes[0]}, inversion {shapes[1]}, edited {shapes[2]}"
        )
    return arrays


def _to_uint8_trunc(x):
    """numpy's float -> uint8 assignment for values already in [0, 255]: truncation."""
    return jnp.floor(jnp.clip(x, 0.0, 255.0)).astype(jnp.uint8)


# ---------------------------------------------------------------------------------------
# SAGE_p
# ---------------------------------------------------------------------------------------


def diff_mask(a, b, exact_abs: bool = True):
    """Per-image min-max normalised, channel-summed difference ``||a - b||`` of Eq. 21.

    ``a`` and ``b`` are uint8 ``(..., H, W, 3)``; returns float16 ``(..., H, W)`` in
    [0, 1] (the reference stores the mask in a float16 array, so values are rounded to
    float16).

    ``exact_abs=True`` (default) uses the true absolute difference ``|a - b|``: this is
    the equation's intent and it is what reproduces the reference fixture.
    ``exact_abs=False`` reproduces the official script literally: ``np.abs(img1 - img2)``
    on uint8 arrays wraps modulo 256 (``|a - b|`` becomes ``(a - b) mod 256``).
    A constant difference map (max == min) gives an all-zero mask (the reference
    divides by zero there).
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if exact_abs:
        d = jnp.abs(a.astype(jnp.int32) - b.astype(jnp.int32))
    else:
        d = (a - b).astype(jnp.int32)  # uint8 arithmetic wraps mod 256, as numpy does
    d = jnp.sum(d, axis=-1)  # (..., H, W), integers 0..765
    dmin = jnp.min(d, axis=(-2, -1), keepdims=True)
    dmax = jnp.max(d, axis=(-2, -1), keepdims=True)
    span = dmax - dmin
    ft = _float_dtype()
    num = (d - dmin).astype(ft)
    den = jnp.where(span > 0, span, 1).astype(ft)
    return (num / den).astype(jnp.float16)


def gaussian_kernel(ksize: int = 3, sigma=1.3):
    """``K[y, x] = exp(-(x^2 + y^2) / (2 sigma^2))`` on a ``ksize x ksize`` grid
    centred at 0, normalised to sum 1 (the reference's ``gaussian_filter`` kernel)."""
    if ksize < 1 or ksize % 2 != 1:
        raise ValueError(f"ksize must be a positive odd integer, got {ksize}")
    r = ksize // 2
    ft = _float_dtype()
    coords = jnp.arange(-r, r + 1, dtype=ft)
    sq = coords[:, None] ** 2 + coords[None, :] ** 2
    k = jnp.exp(-sq / (2.0 * jnp.asarray(sigma, ft) ** 2))
    return k / jnp.sum(k)


def _gaussian_filter(mask, ksize: int, sigma):
    """Zero-padded ``ksize x ksize`` Gaussian of ``(..., H, W)`` maps, clipped to [0, 1]."""
    ft = _float_dtype()
    lead = mask.shape[:-2]
    h, w = mask.shape[-2:]
    x = mask.astype(ft).reshape((-1, 1, h, w))  # NCHW, C = 1
    k = gaussian_kernel(ksize, sigma).astype(ft)[None, None]  # OIHW; symmetric kernel
    y = jax.lax.conv_general_dilated(
        x,
        k,
        window_strides=(1, 1),
        padding="SAME",  # zero padding of ksize // 2 on every side
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return jnp.clip(y.reshape(lead + (h, w)), 0.0, 1.0)


def sage_p(real, inversion, edited, beta=0.5, ksize: int = 3, sigma=1.3, *, exact_abs: bool = True):
    """SAGE_p, pixel-domain fusion (SAGE paper, Eq. 21-22; official ``combine``).

    Eq. 21: ``Mask = Gaussian(||I_real - I_inv|| - beta ||I_edited - I_inv||)``, with
    each difference the channel sum of absolute differences, min-max normalised per
    image (float16, as in the reference), negative values set to 0, then a zero-padded
    ``ksize x ksize`` Gaussian of std ``sigma``, clipped to [0, 1].

    Eq. 22 reads ``I_fused = I_edited + Mask * I_real``; the official code (and this
    function) blends ``I_fused = I_real * Mask + I_edited * (1 - Mask)``, which is the
    reading in which the mask moves the real image's pixels into the edited one. The
    paper and the reference thus agree on the blend and there is no ``formula`` switch;
    the only choice is how the difference is taken (``exact_abs``, see :func:`diff_mask`:
    True, the default, is the equation's true ``|a - b|`` and matches the reference
    fixture; False wraps the uint8 difference modulo 256 as the official script's
    ``np.abs(img1 - img2)`` literally does).

    Args:
      real, inversion, edited: uint8 arrays of shape ``(..., H, W, 3)``, equal shapes.
      beta: weight of the inversion-to-edit difference (0.5 in the official code).
      ksize, sigma: Gaussian kernel size (odd, static under jit) and std.
    Returns:
      uint8 ``(..., H, W, 3)``, ``clip(real * Mask + edited * (1 - Mask), 0, 255)``
      truncated to uint8.
    """
    real, inversion, edited = _check_images(real, inversion, edited, "sage_p")
    ri = diff_mask(real, inversion, exact_abs)
    ie = diff_mask(inversion, edited, exact_abs)
    # numpy: float16 array - python float * float16 array stays float16 (op by op)
    mask = ri - jnp.asarray(beta, jnp.float16) * ie
    mask = jnp.maximum(mask, jnp.float16(0))
    mask = _gaussian_filter(mask, ksize, sigma)[..., None]
    ft = mask.dtype
    out = real.astype(ft) * mask + edited.astype(ft) * (1.0 - mask)
    return _to_uint8_trunc(out)


# ---------------------------------------------------------------------------------------
# SAGE_f
# ---------------------------------------------------------------------------------------


def _centred_gaussian(h: int, w: int, sigma, ft):
    """``G[i, j] = exp(-((i - (h-1)/2)^2 + (j - (w-1)/2)^2) / (2 sigma^2))``."""
    i = jnp.arange(h, dtype=ft) - (h - 1) / 2.0
    j = jnp.arange(w, dtype=ft) - (w - 1) / 2.0
    d2 = i[:, None] ** 2 + j[None, :] ** 2
    return jnp.exp(-d2 / (2.0 * jnp.asarray(sigma, ft) ** 2))


def sage_f(
    real,
    inversion,
    edited,
    sigma=5.0,
    gamma1=0.8,
    gamma2=0.3,
    band: str = "low",
    *,
    formula: str = "reference",
):
    """SAGE_f, frequency-domain fusion (SAGE paper, Eq. 23; official ``freq_conpensate``).

    Eq. 23: ``Low(I_fused) = gamma1 Low(I_edited) + (Low(I_real) - gamma2 Low(I_inv))``,
    with ``Low`` a centred Gaussian low-pass
    ``G[i, j] = exp(-((i - (H-1)/2)^2 + (j - (W-1)/2)^2) / (2 sigma^2))`` applied to the
    fftshift-ed 2-D spectrum of each channel. With ``R, I, F`` the centred spectra of
    real, inversion and edited and ``M = G`` (``band="low"``) or ``M = 1 - G``
    (``band="high"``):

    - ``formula="reference"`` (default), the official code:
      ``fused = Re ifft(M R - gamma2 M I + gamma1 F)`` -- the edited spectrum is *not*
      filtered -- then min-max normalised to 0..255 per image and channel and truncated
      to uint8.
    - ``formula="paper"``, Eq. 23 taken literally with the other band of the edited image
      kept: ``fused = Re ifft(M (gamma1 F + R - gamma2 I) + (1 - M) F)``, no min-max
      renormalisation, clipped to [0, 255] and rounded to uint8 (rounding, not
      truncation, so that e.g. ``real = inversion = 0, gamma1 = 1`` returns the edited
      image unchanged despite FFT round-off). Eq. 23 states the
      low band only; ``band="high"`` is its mirror image (high band compensated, low
      band of the edited image kept).

    Args:
      real, inversion, edited: uint8 arrays of shape ``(..., H, W, 3)``, equal shapes.
      sigma: std of the Gaussian in frequency bins (5 in the official code).
      gamma1, gamma2: weights of Eq. 23 (0.8 and 0.3 in the official code).
      band: "low" or "high" (static under jit).
      formula: "reference" or "paper" (static under jit).
    Returns:
      uint8 ``(..., H, W, 3)``.
    """
    if band not in ("low", "high"):
        raise ValueError(f"sage_f: band must be 'low' or 'high', got {band!r}")
    if formula not in ("reference", "paper"):
        raise ValueError(f"sage_f: formula must be 'reference' or 'paper', got {formula!r}")
    real, inversion, edited = _check_images(real, inversion, edited, "sage_f")
    ft = _float_dtype()
    h, w = real.shape[-3], real.shape[-2]
    axes = (-3, -2)

    def spectrum(x):
        return jnp.fft.fftshift(jnp.fft.fft2(x.astype(ft), axes=axes), axes=axes)

    R, I, F = spectrum(real), spectrum(inversion), spectrum(edited)
    g = _centred_gaussian(h, w, sigma, ft)
    m = (g if band == "low" else 1.0 - g)[:, :, None]  # (H, W, 1): same for every channel
    if formula == "reference":
        fft = m * R - gamma2 * (m * I) + gamma1 * F
    else:
        fft = m * (gamma1 * F + R - gamma2 * I) + (1.0 - m) * F
    n = jnp.real(jnp.fft.ifft2(jnp.fft.ifftshift(fft, axes=axes), axes=axes))
    if formula == "reference":
        nmin = jnp.min(n, axis=axes, keepdims=True)
        nmax = jnp.max(n, axis=axes, keepdims=True)
        span = nmax - nmin
        n = 255.0 * (n - nmin) / jnp.where(span > 0, span, 1.0)
        return _to_uint8_trunc(n)
    return jnp.round(jnp.clip(n, 0.0, 255.0)).astype(jnp.uint8)


# ---------------------------------------------------------------------------------------
# Both
# ---------------------------------------------------------------------------------------


def fuse(real, inversion, edited, method: str = "pf", *, formula: str = "reference", exact_abs: bool = True):
    """Apply SAGE_p (Eq. 21-22), SAGE_f (Eq. 23, low band) or both.

    ``method``: "p" -> :func:`sage_p`; "f" -> :func:`sage_f` with ``band="low"``;
    "pf" -> :func:`sage_p`, whose result is then the edited image of
    :func:`sage_f` (low band). Default parameters of the official code throughout;
    ``formula`` goes to :func:`sage_f`, ``exact_abs`` to :func:`sage_p`.
    Returns uint8 of the input shape.
    """
    if method == "p":
        return sage_p(real, inversion, edited, exact_abs=exact_abs)
    if method == "f":
        return sage_f(real, inversion, edited, band="low", formula=formula)
    if method == "pf":
        fused = sage_p(real, inversion, edited, exact_abs=exact_abs)
        return sage_f(real, inversion, fused, band="low", formula=formula)
    raise ValueError(f"fuse: method must be 'p', 'f' or 'pf', got {method!r}")
