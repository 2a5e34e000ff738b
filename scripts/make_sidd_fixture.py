"""Writes the tiny SIDD-validation-shaped .mat fixtures of daa-degrade's layout tests.

The real files hold (40, 32, 256, 256, 3) uint8 arrays named ValidationNoisyBlocksSrgb and
ValidationGtBlocksSrgb (MATLAB v5). The fixtures keep the names and layout at (2, 3, 16, 12, 3),
with values that encode their own index so the test can check the reader's axis order:
value = (10 * a + b + 7 * y + 3 * x + 50 * c) % 256, plus 1 for the noisy array.

    python3 scripts/make_sidd_fixture.py crates/daa-degrade/tests/data
"""
import sys
from pathlib import Path

import numpy as np
import scipy.io as sio

out = Path(sys.argv[1])
a, b, y, x, c = np.indices((2, 3, 16, 12, 3))
gt = ((10 * a + b + 7 * y + 3 * x + 50 * c) % 256).astype(np.uint8)
noisy = ((gt.astype(np.int32) + 1) % 256).astype(np.uint8)
sio.savemat(out / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": gt}, do_compression=True)
sio.savemat(out / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy}, do_compression=True)
