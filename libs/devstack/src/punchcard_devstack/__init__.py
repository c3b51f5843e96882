"""Real Kafka and PostgreSQL from packages, for make run, the tests and the benchmarks."""

from punchcard_devstack.processes import DevStackError
from punchcard_devstack.services import ServiceProcess
from punchcard_devstack.stack import DevStack, Endpoints, endpoints_from_environment

__all__ = [
    "DevStack",
    "DevStackError",
    "Endpoints",
    "ServiceProcess",
    "endpoints_from_environment",
]
