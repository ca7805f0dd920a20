"""Moving image data onto and off volumes."""
