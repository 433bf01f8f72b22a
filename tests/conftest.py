"""Suite-wide settings.

Hypothesis: these machines are shared and noisy, so no test fails for being
slow (no per-example deadline, no too-slow health check); what a property test
checks is behaviour, never time.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ngxws", deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ngxws")
