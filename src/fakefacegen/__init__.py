"""FakeFaceGen: prepare face photos, train a DCGAN, generate and evaluate fake faces."""

__version__ = "0.1.0"
