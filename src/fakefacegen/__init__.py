"""FakeFaceGen: prepare face photos, train a DCGAN, generate and evaluate fake faces.

from fakefacegen import load_generator
G = load_generator()              # the bundled 64x64 model
faces = G.sample(16, seed=0)      # uint8 (16, 64, 64, 3)
"""

__version__ = "0.1.0"

# The Python API, imported on first use (PEP 562) so `import fakefacegen` does not import torch.
_LAZY = {
    "load_generator": "generate",
    "bundled_model_path": "generate",
    "noise": "generate",
    "LoadedGenerator": "generate",
    "slerp": "interpolate",
    "walk_latents": "interpolate",
    "export_onnx": "export",
    "export_torchscript": "export",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'fakefacegen' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
