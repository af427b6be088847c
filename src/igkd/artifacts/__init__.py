"""What a run writes and how it is recognised: stage identities, content hashes, manifests, provenance, atomic writes, file names."""
