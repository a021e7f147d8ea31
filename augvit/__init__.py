"""augvit: the library of the ViT augmentation study; `stages/` holds the DVC entry points."""
