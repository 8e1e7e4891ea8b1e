"""The numpy core: the invariant, packing, flat data, sources, resume and errors."""
