"""The names of the GAN's options that config/ checks, kept free of torch so that
`import hpcgen.config` stays light: gan/augment.py and networks.py implement them from these.

A leaf: it imports nothing of hpcgen, so any layer (config/ included) may import it.
"""

# ADA's "bgc" pipeline in its order (Karras et al. 2020, appendix B); gan/augment.py applies them
GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
AUGMENTATIONS = GEOMETRIC + COLOUR

# model.reduced_precision -> the torch dtype of the GAN's top blocks (networks.reduced_dtype);
# auto is bf16 on a GPU and none (fp32) on the CPU
REDUCED_PRECISIONS = {"auto": None, "none": "float32", "bf16": "bfloat16", "fp16": "float16"}
