"""The VGG network in flax.linen: blocks, model, parameter-free ops, fast CPU ops, feature taps."""
