"""Modules over the ops: fused layers (``fused``), the models fastgan ships (``models``) and their presets
(``presets``), the minibatch standard deviation (``layers``), spectral normalisation (``spectral``) and
stacked replica layers (``stacked``)."""
from .fused import FusedLinear, FusedMLP, Maxout, activation_of, fuse, whole_mlp_spec
from .layers import MinibatchStd
from .models import (BatchNormGenerator, ConditionalMLPGenerator, MaxoutDiscriminator, MLPDiscriminator, MLPGenerator,
                     ProjectionDiscriminator, pacgan_models)

__all__ = ["FusedLinear", "FusedMLP", "Maxout", "fuse", "whole_mlp_spec", "activation_of", "MLPGenerator",
           "MLPDiscriminator", "ConditionalMLPGenerator", "ProjectionDiscriminator", "BatchNormGenerator",
           "MaxoutDiscriminator", "MinibatchStd", "pacgan_models"]
