"""The doctor's layers, in the order findings are shown: a module of its own so that a
machine's checks (a run's preflight) name them without loading the failure signatures."""

LAYERS = (
    "hardware",
    "driver",
    "cuda",
    "libraries",
    "torch",
    "distributed",
    "build",
    "packages",
    "lock",
)
