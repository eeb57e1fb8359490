"""GAN maths: losses and regularisers as pure functions."""
