"""Two-party secret-shared inference for small `nn.Sequential` models, in plain PyTorch int64 tensors.

Pure protocol code with no Django in it: the client (`gridclient`) runs the sharing and reconstruction,
worker nodes run `engine`, the crypto provider runs `randomness` (the node side lives in `smpc_app`).

Security model (semi-honest, README "Encrypted inference"): two workers that do not collude with each
other, and a crypto provider that colludes with neither. Every value a worker stores or receives is a
share or a masked value, uniformly distributed on its own; the provider receives only session ids, party
numbers and batch sizes.
"""
