"""Summary scores of generated images: FID, Inception Score, R-precision, caption consistency."""
