"""Deterministic synthetic artworks with damage masks in the ARTeFACT label scheme.

The code lives in the package's modules; this re-exports the names other code imports.
"""

from heritageseg.data.synth.damage import (
    CONTENTS,
    MATERIALS,
    SynthSample,
    generate_sample,
    iter_samples,
)

__all__ = ["CONTENTS", "MATERIALS", "SynthSample", "generate_sample", "iter_samples"]
