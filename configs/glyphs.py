"""Font glyphs at 32 px (docs/glyphs.md): the 62 Latin letters and digits of about 440
training typefaces are the seen classes; 78 Greek and Cyrillic letters are the unseen
ones, and a fifth of the faces (whole typefaces) are held out.

Make the dataset first (fonts from scripts/install_fonts.sh; about a minute, 30 MB):

    sage-jax make-glyphs --out data/glyphs32
    sage-jax train --config glyphs --workdir runs/glyphs     # about 47 min on 2 CPU cores
    sage-jax demo --model runs/glyphs/model                   # or glyph-benchmark --data data/glyphs32

``scripts/make_glyph_model.sh`` does all of it and remakes the shipped glyph model. The
pipeline first trains the glyph oracles on the training typefaces (``oracles``), then
measures every stage on the held-out ones (docs/glyphs.md).
    # elsewhere: --config.data.root=/path/to/glyphs32; a TFDS build (make-glyphs --tfds DIR):
    # --config.data.data_dir=DIR

At 64 px (``make-glyphs --size 64 --out data/glyphs64``), the GAN stage alone, as measured
adversarially (docs/glyphs.md, "Recommended settings"; the whole pipeline is not run at
64 px):

    sage-jax train-gan --config glyphs --workdir runs/gan64 --config.data.root=data/glyphs64 \
        --config.data.size=64 --config.model.generator.size=64 \
        "--config.model.generator.channels=((4,32),(8,32),(16,32),(32,32),(64,32))" \
        --config.gan.recipe=adversarial --config.model.generator.upsample_mode=blur

The networks and their training are the tiny config's (``configs/tiny.py``, loaded from
beside this file: a change there changes this config), which starts from
:func:`sage_jax.config.default_config`; the data section is the default's, set to the
glyphs. The images are gray, a white glyph on black; the networks see them as RGB with
the gray value in every channel, in [-1, 1].
"""

from sage_jax.config import default_config, load_sibling
from sage_jax.data.glyphs import SEEN_CHARS, UNSEEN_CHARS

tiny = load_sibling(__file__, "tiny")   # beside this file, wherever it is


def get_config(arg=None):
    del arg
    config = tiny.get_config()           # default_config() with the tiny networks and training
    config.data = default_config().data  # the data section from the defaults, not tiny's synthetic settings

    data = config.data
    data.name = "glyphs"
    data.root = "data/glyphs32"      # sage-jax make-glyphs --out data/glyphs32 (override on the command line)
    data.size = config.model.generator.size   # 32: the tiny networks' size
    data.num_seen = len(SEEN_CHARS)      # 62: A-Z a-z 0-9 (checked against the dataset)
    data.num_unseen = len(UNSEEN_CHARS)  # 78: Greek and Cyrillic letters not drawn like a Latin one (checked)
    data.samples_per_class = 0       # every training face: one image of each class per face
    # data.held_out: make-glyphs' default (0.2), checked against the build
    # data.hflip stays off: a mirrored letter is another letter, or none

    # the RGB skip images doubled bilinearly, the feature maps by nearest neighbour (as
    # tiny's, set here for the record): "nearest" everywhere stacks 2x2 steps into 4-8 px
    # tiles (tile contrast 1.59 against the real glyphs' 1.38 after 2,000 steps), "bilinear"
    # everywhere learns the letters slower (0.39 of samples confident against 0.64);
    # "smooth-skip" 1.42 and 0.56 (docs/glyphs.md)
    config.model.generator.upsample_mode = "smooth-skip"

    # gan.recipe stays tiny's "reconstruction" (20,000 steps: 0.76 of samples confident, 59 of
    # 62 letters on held-out typefaces). For --config.gan.recipe=adversarial the gan
    # section's adversarial keys are rosinality's defaults, kept as they are: on these
    # networks every standard remedy measured (R1 by StyleGAN2-ADA's heuristic, minibatch-std
    # group, mapping depth, width, batch 64, DiffAugment, conditioning) still collapses onto
    # one letter at 2,000 steps, and the defaults leave the collapse by themselves from about
    # 3,000 (18 letters at 10,000; 25 letters, 0.22 confident at 20,000, still rising; the
    # recipe: 59, 0.76); keep gan.steps at 20,000 or more, gan.augment off (DiffAugment kept
    # the collapse through 5,000 steps) and judge by gan.eval_every's confident share and
    # letters hit (docs/glyphs.md, "Recommended settings")

    # the glyph oracles (sage_jax.metrics.glyph_oracles): 900 steps of 64 reach 0.905 character
    # accuracy on held-out typefaces in about 5 min on 2 cores (docs/glyph_oracles.md)
    config.oracles.steps = 900
    config.oracles.batch_size = 64
    return config
