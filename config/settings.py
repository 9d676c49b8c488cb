"""KeyCore settings, read from the environment (12-factor).

Two modes:

* **embedded** (``DEBUG=1``, what ``make run`` uses): SQLite under ``var/``, a
  Celery broker on kombu's filesystem transport under ``var/`` (no server),
  a secret key and a root key generated into ``var/`` on first start;
* **production** (``DEBUG`` off, the default): nothing secret is defaulted —
  ``SECRET_KEY`` and ``KEYCORE_ROOT_KEY`` (or their ``*_FILE`` variants) are
  required, cookies are secure, HSTS is on.

A missing secret is not an error *here*: every process that would use it refuses
to start instead (the web application, the Celery worker and beat, and every
management command through a system check; see ``keycore/checks.py``). That
leaves ``manage.py keycore_root_key --generate`` working before a root key exists,
which is exactly when an operator needs it.

Every variable is listed in the README.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("KEYCORE_VAR_DIR", BASE_DIR / "var"))

TESTING = "pytest" in sys.modules or os.environ.get("KEYCORE_TESTING") == "1"


def env(name: str, default: str | None = None) -> str | None:
    """A variable, or the contents of the file named by ``<NAME>_FILE`` (for Docker/K8s secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


def _embedded_secret(filename: str, make) -> str:
    """Read a generated secret from var/, creating it (mode 0600) on first use."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / filename
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", False)
EMBEDDED = DEBUG or TESTING

# --- secrets -----------------------------------------------------------------

# Production without SECRET_KEY: left empty, and Django refuses an empty one wherever it is used;
# keycore.checks.require_secrets() makes every KeyCore process refuse to start without it.
SECRET_KEY = env("SECRET_KEY") or ""
if not SECRET_KEY:
    if TESTING:
        SECRET_KEY = "test-only-" + "x" * 50
    elif EMBEDDED:
        SECRET_KEY = _embedded_secret("secret_key", lambda: secrets.token_urlsafe(50))


def _generate_root_key() -> str:
    import base64

    return base64.b64encode(os.urandom(32)).decode()


# The operator's root key seals every secret KeyCore stores (local KEKs, KMS credentials).
# KEYCORE_ROOT_KEY_PREVIOUS lists older root keys still accepted for unsealing while a
# root-key rotation job re-seals everything under the current one.
# Production without one: left empty, and every KeyCore process refuses to start (keycore/checks.py),
# except `manage.py keycore_root_key --generate`, which makes one.
KEYCORE_ROOT_KEY = env("KEYCORE_ROOT_KEY") or ""
# Or the root key wrapped by a KMS (keycore/unseal.py): unwrapped by KEYCORE_ROOT_KEY_KMS when a process starts.
KEYCORE_ROOT_KEY_WRAPPED = env("KEYCORE_ROOT_KEY_WRAPPED") or ""
KEYCORE_ROOT_KEY_KMS = env("KEYCORE_ROOT_KEY_KMS") or ""
_ROOT_KEY_KMS_PREFIX = "KEYCORE_ROOT_KEY_KMS_"


def _root_key_kms_options() -> dict[str, str]:
    """The provider's fields from KEYCORE_ROOT_KEY_KMS_<FIELD> (or <FIELD>_FILE), by lowercase field name."""
    options = {}
    for name in os.environ:
        if not name.startswith(_ROOT_KEY_KMS_PREFIX) or name == f"{_ROOT_KEY_KMS_PREFIX}FILE":
            continue
        field = name[len(_ROOT_KEY_KMS_PREFIX) :].removesuffix("_FILE")
        value = env(f"{_ROOT_KEY_KMS_PREFIX}{field}")
        if field and value is not None:
            options[field.lower()] = value
    return options


KEYCORE_ROOT_KEY_KMS_OPTIONS = _root_key_kms_options()
# the install id the wrapped root key must be bound to: another install's wrapped text, substituted, is refused
KEYCORE_ROOT_KEY_INSTALL_ID = (env("KEYCORE_ROOT_KEY_INSTALL_ID") or "").strip().lower()
# a KMS that is down when a process starts: tried this many times, waiting BACKOFF seconds, doubling, in between
KEYCORE_ROOT_KEY_UNWRAP_ATTEMPTS = int(env("KEYCORE_ROOT_KEY_UNWRAP_ATTEMPTS", "4"))
KEYCORE_ROOT_KEY_UNWRAP_BACKOFF = float(env("KEYCORE_ROOT_KEY_UNWRAP_BACKOFF", "2"))
if not KEYCORE_ROOT_KEY and not KEYCORE_ROOT_KEY_WRAPPED:
    if TESTING:
        KEYCORE_ROOT_KEY = "dGVzdC1vbmx5LXJvb3Qta2V5LTMyLWJ5dGVzLWxvbmc="  # 32 bytes, tests only
    elif EMBEDDED:
        KEYCORE_ROOT_KEY = _embedded_secret("root_key", _generate_root_key)
KEYCORE_ROOT_KEY_PREVIOUS = env_list("KEYCORE_ROOT_KEY_PREVIOUS")

# --- hosts and security ----------------------------------------------------------

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if EMBEDDED else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
KEYCORE_BASE_URL = env("KEYCORE_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

SECURE = not DEBUG and not TESTING and env_bool("KEYCORE_SECURE_COOKIES", True)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = int(env("SESSION_COOKIE_AGE", str(8 * 3600)))
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SECURE_HSTS_SECONDS = int(env("SECURE_HSTS_SECONDS", "31536000" if SECURE else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
BEHIND_PROXY = env_bool("KEYCORE_BEHIND_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
# How many reverse proxies KeyCore trusts to append the address they saw to X-Forwarded-For. The client is the
# rightmost hop none of them wrote (keycore.services.audit.client_ip); anything further left is the client's own
# claim. 0: X-Forwarded-For is ignored and the peer address is the client.
KEYCORE_TRUSTED_PROXY_COUNT = int(env("KEYCORE_TRUSTED_PROXY_COUNT", "1" if BEHIND_PROXY else "0"))
if KEYCORE_TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("KEYCORE_TRUSTED_PROXY_COUNT is a number of proxies: 0 or more.")
# allauth asks the account adapter, which asks client_ip; its own setting says the same for anything that does not
ALLAUTH_TRUSTED_PROXY_COUNT = KEYCORE_TRUSTED_PROXY_COUNT
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- apps --------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Redoc served from our own static files, not a CDN
    "keycore",
    "vendor_portal",
    "tenant_portal",
]
if env("DATABASE_URL", "").startswith("postgres"):
    INSTALLED_APPS.append("django.contrib.postgres")

MIDDLEWARE = [
    "keycore.middleware.MetricsMiddleware",  # first: it times everything after it
    "django.middleware.security.SecurityMiddleware",
    "keycore.middleware.RefuseNulInPathMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "keycore.middleware.DebugErrorPagesMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "keycore.middleware.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "keycore.context_processors.keycore",
            ],
        },
    },
]

# --- database ------------------------------------------------------------------

DATABASE_URL = env("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'keycore.sqlite3'}"
if DATABASE_URL.startswith("sqlite"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(env("DB_CONN_MAX_AGE", "60")))}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # a file, not memory, so that tests can start real workers and second processes against it
    DATABASES["default"]["TEST"] = {"NAME": env("KEYCORE_TEST_SQLITE", str(VAR_DIR / f"test-{os.getpid()}.sqlite3"))}
    # WAL lets the web server and the Celery worker read while the other writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0 if TESTING else DATABASES["default"]["CONN_MAX_AGE"]
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "keycore.User"

# --- cache (rate limits, throttles; never keys) ----------------------------------------

REDIS_URL = env("REDIS_URL")
if TESTING:
    # per test process, cleared between tests (a shared Redis would leak rate-limit counters between runs)
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
elif REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Celery ------------------------------------------------------------------------

CELERY_BROKER_URL = env("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = Path(env("KEYCORE_BROKER_DIR", str(VAR_DIR / "broker")))
    for sub in ("in", "processed", "control"):
        (_queue_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "in"),
        "data_folder_out": str(_queue_dir / "in"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
else:
    # A chunk of a rekey job finishes well within this; a task not acknowledged in
    # this time (worker killed) is delivered again, and chunks are idempotent.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(env("CELERY_VISIBILITY_TIMEOUT", "600"))}
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", "keycore")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
KEYCORE_HEALTH_CHECK_INTERVAL = int(env("KEYCORE_HEALTH_CHECK_INTERVAL", "300"))

# --- accounts (django-allauth) -----------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_ADAPTER = "keycore.accounts.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = False
ACCOUNT_PREVENT_ENUMERATION = True
# destructive key actions ask for the password, a passkey or a TOTP code: never for a code sent by email
ACCOUNT_REAUTHENTICATION_METHODS = ("password", "mfa")
ACCOUNT_REAUTHENTICATION_TIMEOUT = int(env("KEYCORE_REAUTHENTICATION_TIMEOUT", "300"))
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[KeyCore] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if EMBEDDED else "https"
# Brute-force protection: allauth counts failures per IP and per account in the cache.
ACCOUNT_RATE_LIMITS = {
    "login_failed": env("KEYCORE_LOGIN_RATE_LIMIT", "10/m/ip,5/5m/key"),
    "reset_password": "20/m/ip,5/m/key",
    "signup": "20/m/ip",
}
MFA_ADAPTER = "keycore.accounts.MFAAdapter"
# Passkeys (WebAuthn) work under the CSP: KeyCore's own templates drive them from static/js/passkeys.js.
MFA_SUPPORTED_TYPES = ["webauthn", "totp", "recovery_codes"]
# a passkey that verifies its user (PIN, biometrics) signs in alone; it is bound to KeyCore's host name
MFA_PASSKEY_LOGIN_ENABLED = env_bool("KEYCORE_PASSKEY_LOGIN", True)
MFA_PASSKEY_SIGNUP_ENABLED = False  # accounts come from invitations, with a password
# allauth's passkey forms, with bounded names and audited renames and refusals
MFA_FORMS = {
    "add_webauthn": "keycore.accounts.AddPasskeyForm",
    "edit_webauthn": "keycore.accounts.RenamePasskeyForm",
    "authenticate_webauthn": "keycore.accounts.AuthenticatePasskeyForm",
    "reauthenticate_webauthn": "keycore.accounts.ReauthenticatePasskeyForm",
    "login_webauthn": "keycore.accounts.LoginPasskeyForm",
}
# A passkey sign-in has no per-account secret to guess: it is throttled per IP, as password sign-ins are.
MFA_RATE_LIMITS = {
    "webauthn_login": ",".join(rate for rate in ACCOUNT_RATE_LIMITS["login_failed"].split(",") if rate.endswith("/ip"))
    or "10/m/ip"
}
MFA_TOTP_ISSUER = env("KEYCORE_MFA_ISSUER", "KeyCore")
# Vendor administrators and tenant owners/admins must enrol MFA before they may act.
KEYCORE_REQUIRE_ADMIN_MFA = env_bool("KEYCORE_REQUIRE_ADMIN_MFA", True)
KEYCORE_INVITATION_TTL_HOURS = int(env("KEYCORE_INVITATION_TTL_HOURS", "168"))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- email ----------------------------------------------------------------------

EMAIL_BACKEND = env("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if env("EMAIL_HOST")
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = int(env("EMAIL_PORT", "587"))
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "KeyCore <keycore@localhost>")

# --- REST API ----------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["keycore.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["keycore.api.permissions.HasScope"],
    "DEFAULT_SCHEMA_CLASS": "keycore.api.schema.KeyCoreAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "keycore.api.pagination.CursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # JSON in, JSON out: no browsable HTML API, no form parsing, never a 406
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["keycore.api.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "keycore.api.negotiation.JsonFirstNegotiation",
    "DEFAULT_METADATA_CLASS": None,  # OPTIONS is a 405: the schema describes every endpoint
    "EXCEPTION_HANDLER": "keycore.api.problems.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["keycore.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env("KEYCORE_API_RATE", "100000/min")},
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "KeyCore API",
    "DESCRIPTION": "The vendor bridge (tenants, invitations, KMS configurations, rekey jobs, events) and the "
    "crypto API of KeyCore. Authenticate with `Authorization: Bearer <api key>`; errors are RFC 9457 problem "
    "details (`application/problem+json`). See docs/api.md for a guide.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "keycore.api.schema.add_problem_responses",
    ],
    "TAGS": [
        {"name": "tenants", "description": "Tenants, addressed by your own external id."},
        {"name": "invitations", "description": "Invite tenants' administrators."},
        {"name": "kms-configs", "description": "KMS configurations and key history."},
        {"name": "rekey-jobs", "description": "Background jobs that move tenant keys under new keys."},
        {"name": "events", "description": "Key-use events and the audit trail."},
        {"name": "crypto", "description": "Encrypt, decrypt and rekey tenant data: the one code path."},
    ],
}

# --- KeyCore -----------------------------------------------------------------------

KEYCORE_KEY_CACHE_TTL = float(env("KEYCORE_KEY_CACHE_TTL", "300"))
KEYCORE_KEY_CACHE_SIZE = int(env("KEYCORE_KEY_CACHE_SIZE", "100000"))
KEYCORE_REVOCATION_POLL = float(env("KEYCORE_REVOCATION_POLL", "1.0"))
# the longest an SDK lease (a derived key held in the application's process) lives; a tenant may shorten it
KEYCORE_SDK_LEASE_SECONDS = float(env("KEYCORE_SDK_LEASE_SECONDS", "300"))
# key-use counts are flushed by a thread per process; tests flush explicitly instead
KEYCORE_KEYUSE_FLUSH_INTERVAL = float(env("KEYCORE_KEYUSE_FLUSH_INTERVAL", "1.0"))
KEYCORE_KEYUSE_AUTOFLUSH = env_bool("KEYCORE_KEYUSE_AUTOFLUSH", not TESTING)
# detailed operations (tenants in detailed mode) a process keeps unwritten at most before keeping them as counts
KEYCORE_KEYUSE_DETAIL_BACKLOG = int(env("KEYCORE_KEYUSE_DETAIL_BACKLOG", "1000000"))
KEYCORE_KMS_TIMEOUT = float(env("KEYCORE_KMS_TIMEOUT", "5"))
# Prometheus metrics (keycore/metrics.py, docs/operations.md). /metrics answers only with this bearer token:
# without one it is a 404, so nothing is public by default.
KEYCORE_METRICS_TOKEN = env("KEYCORE_METRICS_TOKEN") or ""
# a Celery worker serves its metrics over HTTP on this port (0: not at all), on this address (internal by default)
KEYCORE_WORKER_METRICS_PORT = int(env("KEYCORE_WORKER_METRICS_PORT", "0"))
KEYCORE_WORKER_METRICS_ADDRESS = env("KEYCORE_WORKER_METRICS_ADDRESS", "127.0.0.1")
# how often each process copies its key-cache counters into the metrics (off the crypto path)
KEYCORE_METRICS_SYNC_INTERVAL = float(env("KEYCORE_METRICS_SYNC_INTERVAL", "5"))
# prometheus-client reads this variable itself, when it is imported: set it in the environment of every
# web and worker process of a machine (config/gunicorn.py sets one for gunicorn if it is missing)
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
# security events: retention of the vendor chain (tenants set their own), pruning and SIEM forwarding
KEYCORE_VENDOR_EVENT_RETENTION_DAYS = int(env("KEYCORE_VENDOR_EVENT_RETENTION_DAYS", "365"))
KEYCORE_EVENT_PRUNE_INTERVAL = float(env("KEYCORE_EVENT_PRUNE_INTERVAL", "3600"))
KEYCORE_EVENT_DELIVERY_INTERVAL = float(env("KEYCORE_EVENT_DELIVERY_INTERVAL", "5"))
KEYCORE_EVENT_DELIVERY_BATCH = int(env("KEYCORE_EVENT_DELIVERY_BATCH", "100"))
KEYCORE_EVENT_DELIVERY_MAX_ATTEMPTS = int(env("KEYCORE_EVENT_DELIVERY_MAX_ATTEMPTS", "8"))
KEYCORE_EVENT_DELIVERY_BACKOFF = float(env("KEYCORE_EVENT_DELIVERY_BACKOFF", "5"))
KEYCORE_EVENT_DELIVERY_BACKOFF_MAX = float(env("KEYCORE_EVENT_DELIVERY_BACKOFF_MAX", "600"))
KEYCORE_EVENT_DELIVERY_TIMEOUT = float(env("KEYCORE_EVENT_DELIVERY_TIMEOUT", "10"))
# webhooks and syslog servers on loopback/private addresses (and plain-http webhooks): embedded mode only by default
KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = env_bool("KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE", EMBEDDED)
# private networks (CIDRs) SIEM destinations may be in, besides public addresses (keycore/egress.py)
KEYCORE_EVENT_DESTINATIONS_ALLOWED_NETWORKS = env_list("KEYCORE_EVENT_DESTINATIONS_ALLOWED_NETWORKS")
KEYCORE_VENDOR_PRINCIPAL = env("KEYCORE_VENDOR_PRINCIPAL", "arn:aws:iam::111122223333:role/keycore")
KEYCORE_EXTRA_PROVIDERS: dict[str, str] = {}
# Networks a tenant's own KMS configuration may point KeyCore at besides public addresses (keycore/egress.py).
KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = env_list(
    "KEYCORE_TENANT_KMS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128" if EMBEDDED else ""
)
# PKCS#11 modules (paths, os.pathsep-separated) that configurations may load; unset = any (embedded only for tenants)
KEYCORE_PKCS11_MODULES = env("KEYCORE_PKCS11_MODULES")
KEYCORE_OFFBOARD_GRACE_DAYS = int(env("KEYCORE_OFFBOARD_GRACE_DAYS", "30"))
# rekey jobs (docs/jobs.md): items per chunk (one task) and per transaction, lease and backoff, retirement grace
KEYCORE_JOB_CHUNK_SIZE = int(env("KEYCORE_JOB_CHUNK_SIZE", "2000"))
KEYCORE_JOB_BATCH_SIZE = int(env("KEYCORE_JOB_BATCH_SIZE", "500"))
KEYCORE_JOB_REMOTE_BATCH_SIZE = int(env("KEYCORE_JOB_REMOTE_BATCH_SIZE", "25"))
KEYCORE_JOB_LEASE_SECONDS = float(env("KEYCORE_JOB_LEASE_SECONDS", "60"))
KEYCORE_JOB_RETRY_BASE = float(env("KEYCORE_JOB_RETRY_BASE", "1"))
KEYCORE_JOB_RETRY_MAX = float(env("KEYCORE_JOB_RETRY_MAX", "300"))
KEYCORE_KEY_RETIREMENT_GRACE_DAYS = int(env("KEYCORE_KEY_RETIREMENT_GRACE_DAYS", "30"))
# `make run`'s demo AWS KMS (scripts/demo_kms.py sets it): what the tenant portal's AWS form offers a newcomer
# to paste. Embedded mode only; a production KeyCore never points anyone at a demo KMS.
KEYCORE_DEMO_KMS = json.loads(env("KEYCORE_DEMO_KMS") or "null") if EMBEDDED else None

# --- i18n, static ------------------------------------------------------------------------

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if EMBEDDED
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = EMBEDDED
if EMBEDDED:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- logging: structured, and never a key -------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "kmip": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
        # the filesystem broker has no host, which kombu warns about at every connection
        "kombu.connection": {"level": "ERROR" if CELERY_BROKER_URL == "filesystem://" else "WARNING"},
    },
}
