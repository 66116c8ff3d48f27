"""The one derivation of weight seeds: a blake2b hash of a seed and a path of names.

Every layer and model that takes a `seed` draws each of its weights (and passes each
sublayer a seed) through `derive_seed(seed, name)`, so a weight's seed is a chain of
hashes along its path, e.g. model seed -> "mixture_of_experts" -> "expert_1" ->
"dense_0". Unlike `seed + offset` arithmetic, two different paths give unrelated
seeds (PLE level 0's `task_0_expert_1` and level 1's `task_0_expert_0` no longer
share one), and a model seed never aliases another model seed's sublayer.
"""

import hashlib

import keras


def derive_seed(seed, *path):
    """A 31-bit seed for the weight or sublayer at `path` below `seed`; None when `seed`
    is None (the weight then draws a fresh random seed of its own)."""
    if seed is None:
        return None
    # repr of the tuple keeps ("a/b", "c") and ("a", "b/c") apart.
    text = repr((int(seed), *(str(p) for p in path)))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 33


def fresh_initializer(identifier, seed, *path):
    """A new initializer instance from `identifier` for the weight at `path` below `seed`.

    Keras initializers holding an integer seed return the same values on every call,
    so each weight gets its own instance. Random initializers are seeded with
    `derive_seed(base, *path)`, `base` being `seed` or, when `seed` is None, an integer
    seed the identifier carries itself; with neither the copy is unseeded and draws its
    own. Non-random initializers (zeros, ones, constant) are copied as they are.
    """
    template = keras.initializers.get(identifier)
    config = template.get_config()
    if "seed" in config:
        base = seed if seed is not None else config["seed"]
        config["seed"] = derive_seed(base, *path) if isinstance(base, int) else None
    return template.__class__.from_config(config)
