"""A feature extractor's images/s on this machine's device (tests/gpu/check.sh, which picks
inception when it is staged here, else tiny-test: named in the output, as its rate says nothing
about Inception's). After one warm-up batch, the median of `repeats` passes.

    python tests/gpu/feature_rate.py inception|tiny-test [images] [resolution] [batch] [repeats]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from hpcgen.eval.features import build_extractor
from hpcgen.eval.inception import weights_dir


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    given = [int(a) for a in sys.argv[2:6]]
    images, resolution, batch, repeats = given + [2048, 64, 256, 3][len(given) :]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    extractor = build_extractor(sys.argv[1], weights_dir(), device)
    x = torch.randint(0, 256, (images, 3, resolution, resolution), dtype=torch.uint8)
    extractor(x[:batch], batch)
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        extractor(x, batch)  # ends with .cpu(): synchronised
        seconds.append(time.perf_counter() - start)
    rate = images / statistics.median(seconds)
    print(f"[check] {extractor.name} features: {rate:,.0f} images/s ({images} images of "
          f"{resolution} px, batch {batch}, {device}); 50k samples + 50k reference images: "
          f"{100_000 / rate:,.0f} s of features")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
