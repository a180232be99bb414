"""Deterministic synthetic artworks with damage masks in the ARTeFACT label scheme.

The real dataset cannot be downloaded here, so every stage is exercised on generated records
in exactly its format. They are meant to be learnable, not merely well-typed: each damage
class has its own look, is drawn into the pixels and the mask together, and is labelled only
where it visibly changes the image, so a small model trained on them learns real distinctions
between classes. Contents, materials and class frequencies are skewed like the published data.

All randomness of sample ``i`` comes from ``np.random.default_rng([seed, i])``: samples can be
made in any order and in parallel, and sample ``i`` does not depend on how many are made.
"""

from heritageseg.data.synth.generator import (
    CONTENTS,
    MATERIALS,
    SynthSample,
    generate_sample,
)

__all__ = ["CONTENTS", "MATERIALS", "SynthSample", "generate_sample"]
