import os

from django.core.wsgi import get_wsgi_application

from keycore.checks import require_secrets

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# no request is answered without the secrets (settings leave them empty so a root key can be generated)
require_secrets()
