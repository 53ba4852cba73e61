"""Loss functions, each a plain function of tensors: supervised contrastive (supcon) and DAMSM matching (damsm)."""
