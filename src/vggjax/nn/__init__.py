"""The VGG network in flax.linen: blocks, model, config factory, weight-fit check, ops, taps."""
