"""seqbatch.torch: the dataset, sampler, loop helpers and DDP."""
