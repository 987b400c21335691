"""Real diffusion workloads for EXION: a tiny class-conditional DiT trained on
scikit-learn's 8x8 digits, its NumPy inference (float and INT12 paths), the EXION software
optimizations as sampler switches, the accuracy table and trace export.

Inference needs only NumPy (and scikit-learn for the digit classifier of the accuracy
table); torch is used by :mod:`exion.workloads.train` only.
"""
