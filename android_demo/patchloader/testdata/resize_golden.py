"""The resize golden for the Java ``ImageResampler`` (written by ``make_testdata.py``).

One small JPEG, made here from a fixed pattern, decoded by Pillow to RGB bytes (so Java needs
no JPEG decoder), and the Python runtime's resize of it (``edgepatch.runtime.images.resize_bilinear``,
the spec's ``"bilinear"``) at a few sizes: down 3.2x/2.4x, exactly 2x, and up. ``resize/cases.json``
lists them; ``ImageResamplerTest`` requires Java's bytes to equal them exactly.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

SOURCE_SIZE = (64, 48)  # width, height: not square, so x and y passes differ
OUT_SIZES = ((20, 20), (32, 24), (80, 80))


def source_rgb():
    """A Pillow RGB image: a JPEG of smooth colour ramps, edges and noise, decoded."""
    from PIL import Image

    width, height = SOURCE_SIZE
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(16).integers(0, 48, (height, width, 3))
    pattern = np.stack([x * 4, y * 5, ((x // 8 + y // 8) % 2) * 200], -1) + noise
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pattern, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def write_resize_golden(folder: str) -> list[dict]:
    from edgepatch.runtime.images import resize_bilinear

    os.makedirs(folder, exist_ok=True)
    image = source_rgb()
    source = f"source_{image.width}x{image.height}.rgb"
    with open(os.path.join(folder, source), "wb") as handle:
        handle.write(image.tobytes())
    cases = []
    for width, height in OUT_SIZES:
        name = f"out_{width}x{height}.rgb"
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(resize_bilinear(image, width, height).tobytes())
        cases.append({"source": source, "width": image.width, "height": image.height,
                      "out": name, "out_width": width, "out_height": height})
    with open(os.path.join(folder, "cases.json"), "w") as handle:
        json.dump(cases, handle, indent=1)
        handle.write("\n")
    return cases
