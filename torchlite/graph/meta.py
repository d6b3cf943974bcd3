"""The `node.meta` keys torchlite sets on FX nodes (one name each, used by every pass)."""

NAME = "torchlite_name"  # the module path a node stands for (a layer, or a constant such as `layers.0.up.weight`)
SHAPE = "torchlite_shape"  # a node's static output shape, recorded or updated by structured pruning
A8 = "torchlite_a8"  # on a linear to run as W8A8: the attribute holding its static activation scale ("" for dynamic)
SOURCE_KEYS = ("stack_trace", "nn_module_stack")  # what a replacement node keeps of the node it replaces
