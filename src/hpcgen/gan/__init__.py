"""GAN maths: losses, regularisers, ADA's augmentations and latent interpolation as pure
tensor functions; augment.augmentation_figure alone writes a file (a PNG)."""
