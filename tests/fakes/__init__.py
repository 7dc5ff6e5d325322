"""Small local HTTP fakes (aiohttp on 127.0.0.1) that speak the real wire format."""

from tests.fakes.admin_api_server import FakeAdminApi
from tests.fakes.stripe_server import FakeStripe

__all__ = ["FakeAdminApi", "FakeStripe"]
