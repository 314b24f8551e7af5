"""The simulated device's fault kinds (csrc/sim/README.md), shared by the
soak and the pytest plugin; a module of its own so the plugin loads light."""

FAULT_KINDS = (
    "submit_retry",
    "submit_fail",
    "submit_restarting",
    "submit_unsupported",
    "cb_fail",
    "ecdsa_mult_false",
    "rsa_bitflip",
    "ecdsa_bitflip",
    "lost",
    "poll_fail",
    "restart",
)
