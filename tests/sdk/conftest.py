from tests.api.conftest import _fresh_api_state, make_key  # noqa: F401 - the API tests' fixtures
