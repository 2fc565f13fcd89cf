"""Kubernetes: plain objects rendered from the job and lock (render.py, pure) and applied,
read and deleted through the official client (apply.py, imported lazily)."""
